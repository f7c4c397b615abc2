"""Synthetic (question, passage) pairs from the user's own ingested chunks, with no labels: the local
LLM writes a question for each sampled chunk, and a pair is kept only when the current retriever
finds that very chunk among its candidates for the question (the quality filter)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, StoreError, UsageError
from ..prompting import BUNDLED_DIR, check_template
from ..store import sample_chunks

TEMPLATE = "make_pairs.txt"
MIN_WORDS = 20  # chunks shorter than this rarely answer a question on their own


@dataclass
class PairStats:
    sampled: int = 0
    written: int = 0
    no_question: int = 0
    duplicate: int = 0
    not_retrieved: int = 0
    out: str = ""
    examples: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"sampled": self.sampled, "written": self.written, "rejected": {
            "no_question": self.no_question, "duplicate": self.duplicate, "not_in_top": self.not_retrieved},
            "out": self.out}

    def lines(self, top: int) -> list[str]:
        """What `rag-bot train make-pairs` prints: the counts, a few examples, and what to run next."""
        return [f"wrote {self.written} pairs of {self.sampled} sampled chunks to {self.out} "
                f"(rejected: {self.no_question} no usable question, {self.duplicate} duplicates, "
                f"{self.not_retrieved} whose chunk the retriever did not find in the top {top})",
                *(f"  Q: {row['query']}\n     from {row['source']}" for row in self.examples),
                f"Next: rag-bot train embedder --pairs {self.out} --out DIR  (or train reranker)"]


def load_template(folder: Path | None) -> str:
    """`make_pairs.txt` from `chat.prompts_dir` when it has one, else the bundled one; must hold {passage}."""
    path = Path(folder) / TEMPLATE if folder and (Path(folder) / TEMPLATE).is_file() else BUNDLED_DIR / TEMPLATE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the prompt template: {exc}") from exc
    check_template(path, text, frozenset({"passage"}), frozenset())
    return text


def clean_question(text: str) -> str | None:
    """The first line of the model's output if it reads as a question of 3 to 40 words, else None."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    line = re.sub(r"^(question\s*:\s*)", "", line, flags=re.IGNORECASE).strip(" \"'")
    if "?" in line:
        line = line[: line.index("?") + 1]
    words = line.split()
    if not 3 <= len(words) <= 40 or not line.endswith("?"):
        return None
    return line


def _checked(count: int, top: int, out: Path) -> Path:
    if count < 1:
        raise UsageError(f"--count: must be 1 or more, not {count}")
    if top < 1:
        raise UsageError(f"--top: must be 1 or more, not {top}")
    if out.suffix.lower() not in (".jsonl", ".ndjson"):
        raise UsageError(f"--out {out}: pairs are written as JSONL; name the file *.jsonl")
    return out


def _rejected(question: str | None, seen: set[str], top_ids: Callable[[str], list[str]], chunk_id: str) -> str:
    """Why a written question is not kept (the `PairStats` count to raise), or "" to keep it: none
    came, it was written before, or the retriever does not find its chunk in the top."""
    if question is None:
        return "no_question"
    if question.lower() in seen:
        return "duplicate"
    return "" if chunk_id in top_ids(question) else "not_retrieved"


def make_pairs(llm: Any, retriever: Any, out: str | Path, *, count: int, top: int, template: str,
               seed: int = 0, max_tokens: int = 48, progress: bool = True) -> PairStats:
    """Write up to `count` JSONL pairs {query, passage, source} to `out` (replaced when done)."""
    from tqdm import tqdm

    out = _checked(count, top, Path(out))
    chunks = sample_chunks(retriever.collection, count, seed, min_words=MIN_WORDS)
    if not chunks:
        raise StoreError(f"store.collection: no chunk of {MIN_WORDS} words or more in "
                         f"{retriever.config.store.collection!r}; ingest documents first")
    depth = retriever.config.model_copy(update={"retriever": retriever.config.retriever.model_copy(
        update={"k": max(top, retriever.config.retriever.k), "fetch_k": max(top, retriever.config.retriever.fetch_k)})})
    wide = retriever.model_copy(update={"config": depth})
    stats = PairStats(out=str(out))
    seen: set[str] = set()
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "w", encoding="utf-8") as handle:
        for chunk in tqdm(chunks, desc="writing questions", unit="chunk", disable=not progress):
            stats.sampled += 1
            prompt = template.format(passage=" ".join(chunk.text.split()))
            question = clean_question("".join(llm.stream("", prompt, max_tokens=max_tokens, stop=["\n"])))
            rejected = _rejected(question, seen, lambda q: [doc.id for doc in wide.candidates(q)[:top]], chunk.id)
            if rejected or question is None:
                setattr(stats, rejected, getattr(stats, rejected) + 1)
                continue
            seen.add(question.lower())
            row = {"query": question, "passage": chunk.text, "source": chunk.metadata.get("source", "")}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            stats.written += 1
            if len(stats.examples) < 3:
                stats.examples.append(row)
    partial.replace(out)
    return stats

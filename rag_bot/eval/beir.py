"""BEIR-format datasets: `corpus.jsonl` (or `.jsonl.gz`), `queries.jsonl`, `qrels/<split>.tsv`.

The corpus is written out as one text file per document (title, blank line, text) named by its
BEIR id, so that it goes through the normal ingest pipeline; the id comes back from each chunk's
`source` metadata with `doc_id()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote, unquote

from ..errors import InputError
from ..rows import iter_jsonl


@dataclass
class BeirDataset:
    folder: Path
    split: str
    queries: dict[str, str]  # only the queries judged in the split
    qrels: dict[str, dict[str, int]]

    @property
    def name(self) -> str:
        return self.folder.resolve().name


def corpus_file(folder: Path) -> Path:
    for name in ("corpus.jsonl", "corpus.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{folder}: no corpus.jsonl or corpus.jsonl.gz; --dataset takes a BEIR-format folder")


def load_beir(folder: str | Path, split: str = "test") -> BeirDataset:
    """The judged queries and their qrels for `split` (the corpus is read by `iter_corpus`)."""
    folder = Path(folder)
    corpus_file(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise InputError(f"{qrels_path}: not found; --split takes one of: {', '.join(splits) or 'none found'}")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(qrels_path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split("\t")
        if number == 1 and not _is_int(fields[-1]):
            continue  # the header row
        if len(fields) != 3 or not _is_int(fields[2]):
            raise InputError(f"{qrels_path}: line {number}: expected query-id, corpus-id, score (tab separated)")
        qrels.setdefault(fields[0], {})[fields[1]] = int(fields[2])
    texts = {row["_id"]: row["text"] for row in _jsonl(folder / "queries.jsonl", ("_id", "text"))}
    missing = [query_id for query_id in qrels if query_id not in texts]
    if missing:
        raise InputError(f"{folder / 'queries.jsonl'}: query {missing[0]!r} of {qrels_path.name} is missing")
    return BeirDataset(folder, split, {query_id: texts[query_id] for query_id in qrels}, qrels)


def iter_corpus(folder: Path) -> Iterator[tuple[str, str, str]]:
    """(id, title, text) of every document."""
    for row in _jsonl(corpus_file(folder), ("_id", "text")):
        yield str(row["_id"]), row.get("title") or "", row["text"]


def write_corpus(folder: Path, out: Path) -> int:
    """One file per document under `out`; unchanged files are left alone so re-ingest is quick."""
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for doc_id_, title, text in iter_corpus(folder):
        path = out / f"{quote(doc_id_, safe='')}.txt"
        content = document_text(title, text)
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
        count += 1
    return count


def beir_texts(folder: Path) -> dict[str, str]:
    """Every document's text by BEIR id, as `document_text` writes it for ingest."""
    return {doc_id: document_text(title, text).strip() for doc_id, title, text in iter_corpus(folder)}


def document_text(title: str, text: str) -> str:
    """A document as one file: title, blank line, text (the text alone when there is no title)."""
    return f"{title}\n\n{text}\n" if title else f"{text}\n"


def doc_id(source: str) -> str:
    """The BEIR id of the document a chunk came from, from the chunk's `source`."""
    return unquote(Path(source).stem)


def _jsonl(path: Path, required: tuple[str, ...]) -> Iterator[dict]:
    return iter_jsonl(path, required, "--dataset takes a BEIR-format folder")


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False

"""Conversations through the whole chain (`rag-bot eval conversations`): MTRAG's human conversations
(`../shared/data/conversations`), each domain's passages in a collection of their own (one file per
passage, named by its id), every conversation asked turn by turn in order with the bot's own earlier
replies as its history, as a user of the chat would.

Per turn: the question the chain searched for (its rewrite of a follow-up), recall@5 of the labelled
passages with that rewrite, with the dataset's rewrite and with the raw question (each through the
retriever without the gate, so that the three compare retrieval alone), whether the reply declined
(`out_of_scope`) or abstained (the documents don't say), its token recall and ROUGE-L against the
reference answer, and the seconds it took. `summarize` groups them by turn (first or later) and by
answerability (ANSWERABLE, PARTIAL, UNANSWERABLE, CONVERSATIONAL).
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import UsageError
from .squad import normalize_answer

DATA_FILE = "mtrag_conversations.jsonl"
RECALL_AT = 5
ABSTAINED = ("not_covered", "nothing_found")  # the chain's reasons for "the documents don't say"


@dataclass(frozen=True)
class Turn:
    turn: int
    question: str
    reference: str  # the reviewed reference answer
    rewrite: str | None  # the dataset's standalone rewrite (a model's; None where it has none)
    answerability: str
    relevant: tuple[str, ...]  # the labelled passages' ids


@dataclass(frozen=True)
class Conversation:
    id: str
    domain: str
    passages: tuple[dict[str, Any], ...]
    turns: tuple[Turn, ...]


def data_file(folder: str | Path) -> Path:
    path = Path(folder)
    path = path / DATA_FILE if path.is_dir() else path
    if not path.is_file():
        raise UsageError(f"--data: {path} not found; give the conversations folder (with {DATA_FILE})")
    return path


def read_conversations(folder: str | Path, domains: Iterable[str] | None = None) -> list[Conversation]:
    """The conversations of `domains` (all when None), in the file's order."""
    wanted = set(domains) if domains else None
    conversations = []
    with data_file(folder).open(encoding="utf-8") as lines:
        for line in lines:
            raw = json.loads(line)
            if wanted is not None and raw["domain"] not in wanted:
                continue
            turns = tuple(Turn(t["turn"], t["question"], t.get("answer") or "", t.get("rewrite"), t["answerability"],
                               tuple(t.get("relevant_passage_ids") or ())) for t in raw["turns"])
            conversations.append(Conversation(raw["id"], raw["domain"], tuple(raw["passages"]), turns))
    if wanted and not conversations:
        raise UsageError(f"--domains: no conversations in {', '.join(sorted(wanted))}; the file has clapnq, "
                         "cloud and fiqa")
    return conversations


def passage_file(passage_id: str) -> str:
    return f"{passage_id}.md"


def write_passages(conversations: list[Conversation], folder: Path) -> Path:
    """One markdown file per distinct passage (its title as the heading), rewritten only when changed."""
    folder.mkdir(parents=True, exist_ok=True)
    for conversation in conversations:
        for passage in conversation.passages:
            text = passage["text"].strip()
            title = (passage.get("title") or "").strip()
            first_line = text.split("\n", 1)[0].strip()  # ClapNQ's passages begin with their title already
            body = f"# {title}\n\n{text}\n" if title and first_line != title else f"{text}\n"
            path = folder / passage_file(passage["id"])
            if not path.exists() or path.read_text(encoding="utf-8") != body:
                path.write_text(body, encoding="utf-8")
    return folder


@dataclass
class TurnRecord:
    conversation: str
    turn: Turn
    searched: str  # what the chain searched for
    reply: str
    reason: str | None
    seconds: float
    recall: dict[str, float] = field(default_factory=dict)  # ours / dataset / raw -> recall@5

    @property
    def declined(self) -> bool:
        return self.reason == "out_of_scope"

    @property
    def abstained(self) -> bool:
        return self.reason in ABSTAINED


def recall_at(retriever: Any, query: str, relevant: tuple[str, ...], k: int = RECALL_AT) -> float:
    """The share of the labelled passages among the first `k` distinct passages the retriever returns."""
    found: list[str] = []
    for doc in retriever.search(query, k=k * 3).documents:
        passage = Path(str(doc.metadata.get("source", ""))).stem
        if passage not in found:
            found.append(passage)
    return len(set(found[:k]) & set(relevant)) / len(relevant)


def ask_conversation(chain: Any, retriever: Any, conversation: Conversation) -> list[TurnRecord]:
    """Every turn in order, the bot's own replies as the history; `retriever` has no gate (recall only)."""
    history: list[dict[str, str]] = []
    records = []
    for turn in conversation.turns:
        started = time.perf_counter()
        result = chain.invoke({"question": turn.question, "history": list(history)})
        seconds = time.perf_counter() - started
        record = TurnRecord(conversation.id, turn, result["question"], result["answer"], result["reason"], seconds)
        if turn.relevant:
            queries = {"ours": record.searched, "dataset": turn.rewrite, "raw": turn.question}
            record.recall = {name: recall_at(retriever, query, turn.relevant) for name, query in queries.items() if query}
        records.append(record)
        history += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": record.reply}]
    return records


def token_recall(reply: str, reference: str) -> float:
    """The share of the reference answer's tokens (SQuAD-normalised, with repeats) found in the reply."""
    gold = Counter(normalize_answer(reference).split())
    if not gold:
        return 0.0
    return sum((gold & Counter(normalize_answer(reply).split())).values()) / sum(gold.values())


def rouge_l(reply: str, reference: str) -> float:
    """ROUGE-L F-measure of the reply against the reference (Google's `rouge-score`, stemmed)."""
    from rouge_score import rouge_scorer

    return float(rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, reply)["rougeL"].fmeasure)


def summarize(records: list[TurnRecord]) -> dict[str, Any]:
    """Figures per group: first turns, later turns, and each answerability label of the later turns."""
    groups: dict[str, list[TurnRecord]] = {"all": records, "first turns": [r for r in records if r.turn.turn == 1],
                                           "later turns": [r for r in records if r.turn.turn > 1]}
    for label in ("ANSWERABLE", "PARTIAL", "UNANSWERABLE", "CONVERSATIONAL"):
        groups[f"later {label}"] = [r for r in groups["later turns"] if r.turn.answerability == label]
        groups[f"all {label}"] = [r for r in records if r.turn.answerability == label]
    return {name: _figures(rows) for name, rows in groups.items() if rows}


def _figures(rows: list[TurnRecord]) -> dict[str, Any]:
    answered = [r for r in rows if r.turn.answerability in ("ANSWERABLE", "PARTIAL") and r.turn.reference]
    figures: dict[str, Any] = {
        "turns": len(rows), "declined": _share(r.declined for r in rows), "abstained": _share(r.abstained for r in rows),
        "rewritten": _share(r.searched.strip() != r.turn.question.strip() for r in rows),
        "seconds_p50": round(statistics.median(r.seconds for r in rows), 2)}
    for name in ("ours", "dataset", "raw"):
        values = [r.recall[name] for r in rows if name in r.recall and "dataset" in r.recall]
        figures[f"recall@{RECALL_AT} {name}"] = round(statistics.mean(values), 4) if values else None
    if answered:
        figures["token_recall"] = round(statistics.mean(token_recall(r.reply, r.turn.reference) for r in answered), 4)
        figures["rouge_l"] = round(statistics.mean(rouge_l(r.reply, r.turn.reference) for r in answered), 4)
    return figures


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return round(sum(values) / len(values), 4) if values else 0.0


def format_conversations(results: dict[str, Any]) -> str:
    """The figures as a table per domain, for the terminal."""
    columns = ["turns", "declined", "abstained", "rewritten", f"recall@{RECALL_AT} ours", f"recall@{RECALL_AT} dataset",
               f"recall@{RECALL_AT} raw", "token_recall", "rouge_l", "seconds_p50"]
    lines = []
    for domain, figures in results["domains"].items():
        lines.append(f"{domain}: {figures['conversations']} conversations, collection {figures['collection']!r}")
        lines.append(f"  {'group':<22}" + "".join(f"{c.replace('recall@5 ', 'r@5 '):>13}" for c in columns))
        for group, row in figures["groups"].items():
            cells = [row.get(c) for c in columns]
            lines.append(f"  {group:<22}" + "".join(f"{'-' if v is None else v:>13}" for v in cells))
    return "\n".join(lines)

"""How well the scope gate separates fair questions from off-topic ones (`rag-bot eval scope`).

Three collections, each with its gate trained from its own corpus as `make run` does: the SQuAD
articles (in scope: their answerable and unanswerable questions), SciFact (its test claims) and the
bot's own example documents (questions written by hand for them; also "fair" sets of questions they
may not answer, where only the injection check's mistakes count). Out of scope for all three:
Banking77's 3,080 banking-app messages, the held-out fifth of the bundled negatives that training
never sees, and prompt-injection messages written for this evaluation (never trained on).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..filter import bundled_negatives
from .squad import read_squad

EXAMPLE_DOCS = Path(__file__).resolve().parents[2] / "examples" / "docs"


@dataclass
class ScopeCollection:
    """One collection to evaluate: the folder to ingest and its in-scope question sets."""

    name: str
    folder: Path
    in_scope: dict[str, list[str]] = field(default_factory=dict)
    # fair questions the documents may not answer: the gate may decline them on topic; what counts is that
    # the injection check never takes them for instructions to the assistant
    fair: dict[str, list[str]] = field(default_factory=dict)


def data_lines(name: str) -> list[str]:
    """Lines of a file bundled in rag_bot/eval/data (comments and blanks left out)."""
    text = resources.files("rag_bot.eval").joinpath("data", name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def out_of_scope_sets(data: Path) -> dict[str, list[str]]:
    banking = data / "banking77" / "test.csv"
    if not banking.is_file():
        raise InputError(f"{banking}: not found; --data takes the shared evaluation data folder")
    with banking.open(encoding="utf-8", newline="") as rows:
        texts = [row["text"] for row in csv.DictReader(rows)]
    return {"banking77": texts, "held_out_negatives": bundled_negatives("held_out"),
            "injections": data_lines("injections.txt"), "injections_2": data_lines("injections_2.txt"),
            "injections_3": data_lines("injections_3.txt")}


def scope_collections(data: Path, work: Path, docs: Path = EXAMPLE_DOCS) -> list[ScopeCollection]:
    """The three collections, their documents written under `work` where they need writing."""
    from .beir import load_beir, write_corpus
    from .squad import write_articles

    articles, questions = read_squad(data / "squad2-dev-subset" / "dev-subset.json")
    squad = ScopeCollection("squad2-dev-subset", write_articles(articles, work / "squad2-dev-subset" / "docs"), {
        "squad_answerable": [q.question for q in questions if q.answerable],
        "squad_unanswerable": [q.question for q in questions if not q.answerable]})
    scifact = load_beir(data / "scifact", "test")
    folder = work / "scifact" / "docs"
    write_corpus(scifact.folder, folder)
    claims = ScopeCollection("scifact", folder, {"scifact_claims": list(scifact.queries.values())})
    examples = ScopeCollection("examples-docs", docs, {"docs_questions": data_lines("docs_questions.txt"),
                                                         "docs_questions_2": data_lines("docs_questions_2.txt"),
                                                         "docs_questions_3": data_lines("docs_questions_3.txt")},
                                {"docs_unanswered": data_lines("docs_unanswered.txt"),
                                 "docs_unanswered_2": data_lines("docs_unanswered_2.txt"),
                                 "product_questions": data_lines("product_questions.txt")})
    return [squad, claims, examples]


def evaluate_gate(retriever: Any, sets: dict[str, list[str]], in_scope: bool) -> dict[str, dict[str, Any]]:
    """Per set: how many questions, the share refused (in scope) or declined (out of scope), and the share
    the injection check took for instructions to the assistant (`as_instructions`)."""
    results = {}
    for name, texts in sets.items():
        vectors = retriever.embeddings.embed_documents(texts)
        checks = retriever.check_scopes(vectors, texts)
        declined = [check.declined for check in checks]
        share = sum(declined) / len(declined) if declined else 0.0
        told = sum(check.instruction for check in checks) / len(checks) if checks else 0.0
        key = "refused" if in_scope else "declined"
        results[name] = {"count": len(texts), key: round(share, 4), "as_instructions": round(told, 4),
                         "examples": [t for t, d in zip(texts, declined) if d == in_scope][:3]}
        if in_scope:
            results[name]["instruction_examples"] = [t for t, c in zip(texts, checks) if c.instruction][:3]
    return results


def format_scope(results: dict[str, Any]) -> str:
    """The figures as a table: one row per collection and question set."""
    lines = [f"{'collection':<20}{'set':<22}{'count':>7}  {'in scope':<9}{'refused / declined':>20}"
             f"{'as instructions':>17}"]
    for collection, figures in results["collections"].items():
        for name, row in figures["sets"].items():
            in_scope = "refused" in row
            share = row["refused"] if in_scope else row["declined"]
            kind = "fair" if name in figures.get("fair_sets", ()) else "yes" if in_scope else "no"
            lines.append(f"{collection:<20}{name:<22}{row['count']:>7}  {kind:<9}"
                         f"{('refused ' if in_scope else 'declined ') + format(share, '.1%'):>20}"
                         f"{format(row.get('as_instructions', 0.0), '.1%'):>17}")
        lines.append(f"{'':<20}threshold {figures['threshold']:.3f}; calibrated on {figures['calibrated_on']}")
    return "\n".join(lines)


def to_json(results: dict[str, Any]) -> str:
    return json.dumps(results)

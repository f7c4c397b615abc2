"""How often each word rule is right when it fires (issue 35, item 5): the share of its firings that were on
questions the documents do not answer. Questions in users' words over `examples/docs` (the hand-written
answered sets against the unanswered ones of rag_bot/eval/data) and SQuAD 2.0 (answerable against
unanswerable), each through the retriever and `RagChain.rule_flags` as the chat runs them (no model reads).
A rule under 90% may not refuse on its own. Prints and writes bench/results/rule_precision.json.

    .venv/bin/python bench/rule_precision.py [--squad-sample N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from conversation import prepare
from scifact import ROOT, cpu_flags, machine

from ingest.pipeline import run_ingest
from rag_bot.chain import load_chain
from rag_bot.config import load_config
from rag_bot.eval.runs import squad_chain
from rag_bot.eval.scope import data_lines
from rag_bot.eval.squad import sample_questions

RULES = ("unmentioned", "numbers_not_found", "contrast", "weak_evidence")


def fired(chain, question: str) -> dict[str, bool] | None:
    """Which rules fire for `question` (None: declined by the gate, or nothing found)."""
    retrieval = chain.retriever.search(question, k=chain.passages)
    if retrieval.declined or not retrieval.documents:
        return None
    _, used, evidence = chain.read(question, retrieval.documents, reads=False)
    flags = chain.rule_flags(question, used, evidence).to_json()
    return {rule: bool(flags[rule]) for rule in RULES}


def precision(answered: list[dict | None], unanswered: list[dict | None]) -> dict:
    """Per rule: firings on answered questions (wrong), on unanswered ones (right), and the precision."""
    table = {}
    for rule in RULES:
        wrong = sum(1 for flags in answered if flags and flags[rule])
        right = sum(1 for flags in unanswered if flags and flags[rule])
        table[rule] = {"fired_answered": wrong, "fired_unanswered": right,
                       "precision": round(right / (right + wrong), 4) if right + wrong else None}
    return {"answered": len(answered), "unanswered": len(unanswered), "rules": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad-sample", type=int, default=200, help="answerable and unanswerable questions each")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rule_precision.json")
    args = parser.parse_args()
    chain = load_chain(load_config(prepare()), judge=None)
    answered = [fired(chain, q) for name in ("docs_questions", "docs_questions_2", "docs_questions_3") for q in data_lines(f"{name}.txt")]
    unanswered = [fired(chain, q) for name in ("docs_unanswered", "docs_unanswered_2") for q in data_lines(f"{name}.txt")]
    result = {"machine": machine(), "cpu_flags": cpu_flags(), "docs": precision(answered, unanswered)}
    squad_config = load_config(ROOT / ".rag_bot" / "bench-conversation" / "config.yaml")
    squad, _, questions = squad_chain(squad_config, ROOT.parent / "shared" / "data" / "squad2-dev-subset" / "dev-subset.json",
                                      "extract", ingest=run_ingest, quiet=True)
    squad.judge = None
    chosen = sample_questions(questions, args.squad_sample, 0)
    result["squad"] = precision([fired(squad, q.question) for q in chosen if q.answerable],
                                [fired(squad, q.question) for q in chosen if not q.answerable])
    print(json.dumps({key: result[key] for key in ("docs", "squad")}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

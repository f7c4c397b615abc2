"""The chat as a user meets it, with the shipped defaults: questions in users' words over `examples/docs`
(hand-written sets of `rag_bot/eval/data`), each through the chain as `rag-bot chat` runs it. Per question:
what the reply was (a written answer that stood, the quotes in its place, "the documents don't say", a
decline) and three timings: the quotes shown (the `sources` event, which carries them), the first answer
token, the whole reply. Figures are printed and written to bench/results/conversation.json, with the
CPU's flags.

    .venv/bin/python bench/conversation.py [--sets docs_questions_3,docs_unanswered] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scifact import ROOT, cpu_flags, machine

from rag_bot.chain import load_chain
from rag_bot.events import Found, Reply, Text
from rag_bot.config import load_config
from rag_bot.eval.scope import data_lines

WORK = ROOT / ".rag_bot" / "bench-conversation"
RAG_BOT = str(Path(sys.executable).parent / "rag-bot")


def prepare() -> Path:
    """examples/docs ingested and the filter trained from it, as `make run` does; every other setting the default."""
    WORK.mkdir(parents=True, exist_ok=True)
    config = WORK / "config.yaml"
    config.write_text("data_dir: data\nreranker: {enabled: false}\n")  # no cross-encoder ships on PyPI
    for command in (["ingest", str(ROOT / "examples" / "docs"), "--no-progress"], ["train-filter", "--from-corpus"]):
        subprocess.run([RAG_BOT, "--config", str(config), *command], check=True, capture_output=True)
    return config


def ask(chain, question: str) -> dict:
    """One question: its outcome and timings (ms from the question)."""
    start = time.perf_counter()
    shown = first = None
    reply = Reply()
    for event in chain.stream(question):
        reply.apply(event)
        now = (time.perf_counter() - start) * 1000
        if isinstance(event, Found) and shown is None:
            shown = now
        if isinstance(event, Text) and event.piece and first is None:
            first = now
    outcome = ("declined" if reply.declined else "abstained" if reply.abstained else
               "quotes" if reply.quoted else "answered")
    seen = {key: value for key, value in reply.to_json().items() if key in ("judge", "verification", "rules", "scope")}
    total = (time.perf_counter() - start) * 1000
    return {"question": question, "outcome": outcome, "reply": reply.answer.strip(), "quotes_ms": shown,
            "first_token_ms": first, "total_ms": total, **seen}


def p50(values: list) -> float | None:
    found = [value for value in values if value is not None]
    return round(statistics.median(found)) if found else None


def summary(rows: list[dict]) -> dict:
    share = {name: round(sum(row["outcome"] == name for row in rows) / len(rows), 4)
             for name in ("answered", "quotes", "abstained", "declined")}
    written = [row for row in rows if row["outcome"] in ("answered", "quotes")]
    return {"questions": len(rows), **share,
            "quotes_ms_p50": p50([row["quotes_ms"] for row in rows]),
            "first_token_ms_p50": p50([row["first_token_ms"] for row in written]),
            "total_ms_p50": p50([row["total_ms"] for row in written])}


def off_topic_sets(count: int) -> dict[str, list[str]]:
    """`count` Banking77 test messages (a seeded sample) and the bundled injection messages."""
    import csv
    import random

    with open(ROOT.parent / "shared" / "data" / "banking77" / "test.csv", newline="", encoding="utf-8") as handle:
        banking = [row["text"] for row in csv.DictReader(handle)]
    injections = [line for name in ("injections", "injections_2", "injections_3") for line in data_lines(f"{name}.txt")]
    return {"banking77": random.Random(0).sample(banking, min(count, len(banking))), "injections": injections}


def declined_share(chain, messages: list[str]) -> dict:
    """The share of `messages` declined through the whole chain (the gate, then the model's second opinion)."""
    declined = second = 0
    let_through = []
    for message in messages:
        reply = Reply.of(chain.stream(message))
        scope = reply.scope
        if reply.declined:
            declined += 1
        else:
            let_through.append(message)
        second += bool(scope and scope.get("second_opinion") is not None)
    return {"messages": len(messages), "declined": round(declined / len(messages), 4),
            "second_opinions_declined": second, "let_through": let_through}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="docs_questions_3,docs_unanswered", help="question files of rag_bot/eval/data")
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions of each set (0: all)")
    parser.add_argument("--off-topic", type=int, default=0, metavar="N",
                        help="also N Banking77 messages (../shared/data) and every injection message: the share declined")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "conversation.json")
    args = parser.parse_args()
    config = load_config(prepare())
    chain = load_chain(config)
    chain.warm_up()
    ask(chain, "How do I install rag-bot?")  # a first question not measured
    result: dict = {"machine": machine(), "cpu_flags": cpu_flags(), "model": config.llm.model_path,
                    "answer_mode": config.chat.answer_mode, "context_tokens": config.chat.context_tokens, "sets": {}}
    for name in args.sets.split(","):
        questions = data_lines(f"{name}.txt")
        rows = [ask(chain, question) for question in (questions[:args.limit] if args.limit else questions)]
        for row in rows:
            why = row.get("verification") if row["outcome"] == "quotes" else row.get("judge")
            print(f"{row['outcome']:9} {row['total_ms'] / 1000:5.1f} s | {row['question']} | {row['reply'][:100]!r} | {why}")
        result["sets"][name] = {**summary(rows), "rows": rows}
        print(name, json.dumps(summary(rows)))
    if args.off_topic:
        result["off_topic"] = {name: declined_share(chain, messages)
                               for name, messages in off_topic_sets(args.off_topic).items()}
        print(json.dumps(result["off_topic"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

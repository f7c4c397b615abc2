"""Other wordings for the answer judge: do any tell SQuAD 2.0's unanswerable questions from answerable ones better?

The judge (rag_bot/judge.py) reads a question with its quotes and is scored by logit("Yes") - logit("No").
This asks sampled SQuAD questions through the chain as `rag-bot eval answers` does (extract mode, judge
off), keeps those that reach the judge (not declined, not already "the documents don't say", not yes/no),
and scores each wording on them:

- `base`: the shipped prompt (text, then question) over the shipped text: each quote after its passage's file and
  heading (`chain.judge_text`).
- `strict`: a system turn that says what to answer No to (related names, dates or numbers; a differing detail).
- `fewshot`: five worked examples (written for this script; none from SQuAD) as earlier turns.
- `qfirst`: the question before the text.
- `passage`: the shipped prompt over the whole passage the first quote comes from, not the quotes.
- `bare`: the shipped prompt over the quotes alone, without their passages' files and headings (the judge's
  text until session 18).
- `once`: the shipped text, but a quote from the same file and heading as the quote before it is given without
  the citation again (shorter, so quicker).
- `mean`: the mean margin of base, strict and fewshot (three passes).

It prints, per wording, the ROC AUC (answerable against unanswerable) and the share of unanswerable
questions caught at the level that flags 5.5% of answerable ones (what the 60% target needs on top of the
questions already abstained), and records them:

    .venv/bin/python bench/judge_prompts.py --squad ../shared/data/squad2-dev-subset/dev-subset.json [--per 100]
        [--wordings base,fewshot] [--config config.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRICT = ("You check whether a text answers a question. Reply Yes only if the text states the answer to exactly "
          "this question. Reply No if the text only mentions related names, dates or numbers, or if any detail "
          "of the question differs from the text.")
EXAMPLES = [  # (text, question, reply): written for this script
    ("The bridge was opened in 1932 by the state governor, Philip Game. It carries eight lanes of traffic.",
     "Who opened the bridge in 1945?", "No"),
    ("The company moved its headquarters from Denver to Austin in 2010, after a decade of growth.",
     "Where did the company move its headquarters?", "Yes"),
    ("Pasteur developed the first rabies vaccine in 1885 and tested it on a boy bitten by a dog.",
     "Who developed the first polio vaccine?", "No"),
    ("The river is 1,200 km long and drains an area of 90,000 square kilometres.", "How long is the river?", "Yes"),
    ("The treaty was signed by France and Spain, ending the war that had started in 1635.",
     "When did the war end?", "No"),
]
FLAGGED = 0.055  # the share of answerable questions a level may flag: 10% target - 4.8% already abstained
WORDINGS = ("base", "strict", "fewshot", "qfirst", "passage", "bare", "once")


def chat(wording: str, question: str, quotes: str, passage: str, bare: str = "", once: str = "") -> list[dict[str, str]]:
    from rag_bot.judge import ASK, messages

    if wording == "base":
        return messages(question, quotes)
    if wording == "strict":
        return messages(question, quotes, system=STRICT)
    if wording == "fewshot":
        turns = messages(EXAMPLES[0][1], EXAMPLES[0][0])[:1]
        for text, asked, reply in EXAMPLES:
            turns += messages(asked, text)[1:] + [{"role": "assistant", "content": reply}]
        return turns + messages(question, quotes)[1:]
    if wording == "qfirst":
        return messages(question, quotes, ask="Question: {question}\n\nText: {text}\n\n" + ASK.split("\n\n")[-1])
    if wording == "passage":
        return messages(question, passage)
    if wording == "bare":
        return messages(question, bare)
    if wording == "once":
        return messages(question, once)
    raise SystemExit(f"--wordings: {wording!r} is not one of {', '.join(WORDINGS)}")


def reached_judge(chain, questions) -> list[dict]:
    """The questions the judge would read, with their quotes and the first quote's whole passage."""
    from rag_bot.chain import judge_text
    from rag_bot.judge import judged

    rows = []
    for q in questions:
        reply = chain.invoke(q.question)
        if reply["reason"] is not None or not reply["evidence"] or not judged(q.question):
            continue
        quotes = reply["evidence"]
        documents = chain.retriever.search(q.question, k=chain.passages).documents
        rows.append({"question": q.question, "answerable": q.answerable,
                     "quotes": judge_text(quotes, reply["sources"]),
                     "passage": documents[quotes[0].n - 1].page_content,
                     "bare": " ".join(quote.text for quote in quotes),
                     "once": cited_once(quotes, reply["sources"])})
    return rows


def cited_once(quotes, sources) -> str:
    """`judge_text`, with a citation left out where it repeats the one before."""
    parts, last = [], None
    for quote in quotes:
        label = sources[quote.n - 1].label()
        parts.append(quote.text if label == last else f"({label}) {quote.text}")
        last = label
    return " ".join(parts)


def figures(margins: list[float], answerable: list[bool]) -> dict[str, float | None]:
    import numpy as np
    from sklearn.metrics import roc_auc_score

    scores, labels = np.asarray(margins), np.asarray(answerable, dtype=bool)
    if labels.all() or not labels.any():
        return {"auc": None, "level": None, "unanswerable_caught": None}  # a sample too small for both kinds
    level = float(np.quantile(scores[labels], FLAGGED))
    return {"auc": round(float(roc_auc_score(labels, scores)), 3), "level": round(level, 2),
            "unanswerable_caught": round(float(np.mean(scores[~labels] < level)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=Path, required=True, help="the SQuAD 2.0 file (../shared/data/...)")
    parser.add_argument("--per", type=int, default=100, help="answerable and unanswerable questions sampled (each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--wordings", default=",".join(WORDINGS))
    parser.add_argument("--config", type=Path, default=ROOT / "config.yaml", help="whose models and data folder to use")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_prompts.json")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from ingest.pipeline import run_ingest
    from rag_bot.chain import load_judge
    from rag_bot.config import load_config
    from rag_bot.eval.runs import squad_chain
    from rag_bot.eval.squad import sample_questions

    config = load_config(args.config)
    judge_model = config.chat.judge_model
    judge = load_judge(config)
    if judge is None:
        raise SystemExit(f"chat.judge_model is null in {args.config}: name the judge to compare wordings for")
    config = config.model_copy(update={"chat": config.chat.model_copy(update={"judge_model": None})})
    chain, _, questions = squad_chain(config, args.squad, "extract", ingest=run_ingest, quiet=True)
    sampled = sample_questions(questions, args.per, args.seed)
    rows = reached_judge(chain, sampled)
    answerable = [row["answerable"] for row in rows]
    print(f"{len(rows)} of {len(sampled)} sampled questions reach the judge "
          f"({sum(answerable)} answerable, {len(rows) - sum(answerable)} unanswerable)", flush=True)
    results: dict[str, dict] = {}
    margins: dict[str, list[float]] = {}
    wordings = [w for w in args.wordings.split(",") if w]
    for wording in wordings:
        start = time.perf_counter()  # one wording at a time, so its shared opening is evaluated once
        margins[wording] = [judge.score(chat(wording, row["question"], row["quotes"], row["passage"], row["bare"],
                                         row["once"]))
                            for row in rows]
        results[wording] = figures(margins[wording], answerable)
        results[wording]["seconds_per_question"] = round((time.perf_counter() - start) / len(rows), 2)
        print(f"{wording:8} {results[wording]}", flush=True)
    if {"base", "strict", "fewshot"} <= set(margins):
        mean = [sum(m) / 3 for m in zip(margins["base"], margins["strict"], margins["fewshot"])]
        results["mean"] = figures(mean, answerable)
        print(f"{'mean':8} {results['mean']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"squad": args.squad.name, "per": args.per, "seed": args.seed,
                                    "reached_judge": len(rows), "flagged_answerable": FLAGGED,
                                    "judge_model": judge_model,
                                    "wordings": results}, indent=1) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()

"""End-to-end answer quality on SQuAD 2.0 (`rag-bot eval answers`): every question goes through the
whole chain (scope gate, retrieval, evidence, the LLM, the grounding check).

One run in `generate` mode gives the figures of all three answer modes, because they differ only in
what is shown: `generate` shows the LLM's text, `auto` replaces an ungrounded one by the quoted
evidence, `extract` shows the quotes alone. With `--no-llm` only `extract` is measured.
For answerable questions: a gold answer contained in the reply, in the reply or its quotes, SQuAD
exact match and token F1 of the reply, the article cited first, refused by the gate, abstained.
For unanswerable ones: abstained (declined, "the documents don't say", or, in auto mode, an answer
the grounding check rejected) vs answered.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Iterable

from .squad import SquadQuestion, contains_answer, exact_match, token_f1

MODES = ("generate", "auto", "extract")


@dataclass
class AnswerRecord:
    """What the chain did with one question."""

    question: SquadQuestion
    answer: str  # the LLM's text ("" when no LLM was called)
    quotes: list[str]
    reason: str | None  # out_of_scope, nothing_found, not_covered or None
    grounded: bool | None
    cited: list[str]  # sources in reference order
    strength: float | None
    seconds: float
    judge: float | None = None  # the answer judge's margin (None: no judge, or the question was not judged)

    def reply(self, mode: str) -> str:
        """What the user would read in `mode`."""
        if self.reason is not None or mode == "extract" or (mode == "auto" and self.grounded is False):
            return " ".join(self.quotes) if self.reason is None else ""
        return self.answer

    def abstained(self, mode: str) -> bool:
        return self.reason is not None or (mode == "auto" and self.grounded is False)


def ask_all(chain: Any, questions: Iterable[SquadQuestion], progress: bool = True) -> list[AnswerRecord]:
    """Every question through `chain.invoke`, timed."""
    from tqdm import tqdm

    records = []
    for question in tqdm(list(questions), desc="questions", unit="q", disable=not progress, leave=False):
        start = time.perf_counter()
        result = chain.invoke(question.question)
        seconds = time.perf_counter() - start
        generated = chain.chat.answer_mode != "extract" and result["reason"] is None
        llm_text = result["answer"] if generated else ""
        records.append(AnswerRecord(question, llm_text, [q.text for q in result["evidence"]], result["reason"],
                                    result["grounded"], [s.source for s in result["sources"]],
                                    result.get("strength"), seconds, result.get("judge")))
    return records


def summarize(records: list[AnswerRecord], modes: tuple[str, ...] = MODES, level: float | None = None) -> dict[str, Any]:
    """The figures per mode, for answerable and unanswerable questions, and the latency; with the answer
    judge's `level`, the extract-mode abstain shares the judge would give at other levels."""
    answerable = [r for r in records if r.question.answerable]
    unanswerable = [r for r in records if not r.question.answerable]
    figures: dict[str, Any] = {"questions": {"answerable": len(answerable), "unanswerable": len(unanswerable)}}
    for mode in modes:
        figures[mode] = {
            "answerable": {
                "gold_in_reply": _share(answerable, lambda r: contains_answer(r.reply(mode), r.question.answers)),
                "gold_in_reply_or_quotes": _share(answerable, lambda r: contains_answer(
                    r.reply(mode) + " " + " ".join(r.quotes), r.question.answers)),
                "exact_match": _mean(answerable, lambda r: exact_match(r.reply(mode), r.question.answers)),
                "f1": _mean(answerable, lambda r: token_f1(r.reply(mode), r.question.answers)),
                "abstained": _share(answerable, lambda r: r.abstained(mode)),
            },
            "unanswerable": {"abstained": _share(unanswerable, lambda r: r.abstained(mode))},
        }
    if "auto" in modes and any(r.answer for r in answerable):
        wrong = [r for r in answerable if written_without_gold(r)]
        figures["auto"]["answerable"]["wrong_shown"] = round(len(wrong) / len(answerable), 4)
        # to read: a paraphrase of the gold answer ("five seconds" for "5 s") is not a wrong answer
        figures["auto"]["wrong_shown_examples"] = [
            {"question": r.question.question, "gold": r.question.answers[:3], "answer": r.answer[:300]} for r in wrong]
    figures["answerable"] = {
        "article_cited_first": _share(answerable, lambda r: bool(r.cited) and r.cited[0] == r.question.article),
        "refused_by_gate": _share(answerable, lambda r: r.reason == "out_of_scope"),
        "not_covered": _share(answerable, lambda r: r.reason == "not_covered"),
    }
    figures["unanswerable"] = {"refused_by_gate": _share(unanswerable, lambda r: r.reason == "out_of_scope"),
                               "not_covered": _share(unanswerable, lambda r: r.reason == "not_covered")}
    figures["min_evidence"] = suggest_min_evidence(records)
    if any(r.judge is not None for r in records):
        figures["judge_levels"] = judge_levels(records, level)
    seconds = sorted(r.seconds for r in records)
    figures["latency_s"] = {"p50": round(statistics.median(seconds), 3) if seconds else None,
                            "p95": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 3) if seconds else None}
    return figures


def written_without_gold(record: AnswerRecord) -> bool:
    """A written answer shown as the answer in `auto` mode (verified) that does not hold the gold answer."""
    return (record.reason is None and bool(record.answer) and record.grounded is not False
            and not contains_answer(record.answer, record.question.answers))


JUDGE_LEVELS = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0)


def judge_levels(records: list[AnswerRecord], level: float | None) -> list[dict[str, float]]:
    """Extract mode's abstain shares had `chat.judge_level` been each of JUDGE_LEVELS: a question abstains
    for another reason (the gate, a rule), or because the judge's margin is below the level."""
    def other_reason(r: AnswerRecord) -> bool:
        by_judge = r.judge is not None and level is not None and r.judge < level and r.reason == "not_covered"
        return r.reason is not None and not by_judge

    answerable = [r for r in records if r.question.answerable]
    unanswerable = [r for r in records if not r.question.answerable]
    rows = []
    for candidate in JUDGE_LEVELS:
        def abstains(r: AnswerRecord, at: float = candidate) -> bool:
            return other_reason(r) or (r.judge is not None and r.judge < at)
        rows.append({"level": candidate, "answerable_abstained": _share(answerable, abstains),
                     "unanswerable_abstained": _share(unanswerable, abstains)})
    return rows


def suggest_min_evidence(records: list[AnswerRecord], max_abstain: float = 0.10) -> dict[str, Any]:
    """The `chat.min_evidence` level that abstains on at most `max_abstain` of the answerable questions
    that reached the evidence step, and the share of unanswerable ones it then catches."""
    answerable = sorted(r.strength for r in records if r.question.answerable and r.strength is not None)
    unanswerable = [r.strength for r in records if not r.question.answerable and r.strength is not None]
    if not answerable:
        return {}
    level = answerable[int(max_abstain * len(answerable))]
    caught = sum(s < level for s in unanswerable) / len(unanswerable) if unanswerable else 0.0
    return {"level": round(level, 4), "answerable_abstained": round(sum(s < level for s in answerable) / len(answerable), 4),
            "unanswerable_abstained": round(caught, 4)}


def format_answers(figures: dict[str, Any]) -> str:
    """The figures as a small table per mode."""
    counts = figures["questions"]
    lines = [f"{counts['answerable']} answerable, {counts['unanswerable']} unanswerable questions; "
             f"latency p50 {figures['latency_s']['p50']} s, p95 {figures['latency_s']['p95']} s",
             f"answerable: article cited first {figures['answerable']['article_cited_first']:.1%}, refused by the "
             f"scope gate {figures['answerable']['refused_by_gate']:.1%}, \"documents don't say\" "
             f"{figures['answerable']['not_covered']:.1%}",
             f"{'mode':<10}{'gold in reply':>15}{'+ quotes':>10}{'EM':>8}{'F1':>8}{'abstain (ans)':>15}{'abstain (unans)':>17}"]
    for mode in MODES:
        if mode not in figures:
            continue
        a, u = figures[mode]["answerable"], figures[mode]["unanswerable"]
        lines.append(f"{mode:<10}{a['gold_in_reply']:>15.1%}{a['gold_in_reply_or_quotes']:>10.1%}{a['exact_match']:>8.3f}"
                     f"{a['f1']:>8.3f}{a['abstained']:>15.1%}{u['abstained']:>17.1%}")
    if "wrong_shown" in figures.get("auto", {}).get("answerable", {}):
        lines.append(f"auto: written answers shown without the gold answer {figures['auto']['answerable']['wrong_shown']:.1%} "
                     "of answerable questions (read them: some are paraphrases)")
    suggestion = figures.get("min_evidence") or {}
    if suggestion:
        lines.append(f"chat.min_evidence that abstains on <=10% of answerable questions: {suggestion['level']:.3f} "
                     f"(then {suggestion['unanswerable_abstained']:.1%} of unanswerable ones abstain)")
    for row in figures.get("judge_levels", []):
        lines.append(f"chat.judge_level {row['level']:+.1f}: abstain (ans) {row['answerable_abstained']:.1%}, "
                     f"abstain (unans) {row['unanswerable_abstained']:.1%} (extract)")
    return "\n".join(lines)


def _share(records: list[AnswerRecord], test: Any) -> float:
    return round(sum(1 for r in records if test(r)) / len(records), 4) if records else 0.0


def _mean(records: list[AnswerRecord], value: Any) -> float:
    return round(sum(value(r) for r in records) / len(records), 4) if records else 0.0

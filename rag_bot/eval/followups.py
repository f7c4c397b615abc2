"""Two-turn conversations over examples/docs in a user's own words (`rag-bot eval answers --followups`):
the first question, then a follow-up that depends on it ("How do I turn it off?"), asked with the bot's
own first reply as the history. A follow-up counts as answered when its reply, or the quotes under it,
holds one of the phrases the set gives for it, and it was neither declined nor abstained.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import UsageError

BUNDLED = "docs_followups.txt"


@dataclass(frozen=True)
class FollowUp:
    first: str
    question: str
    expected: tuple[str, ...]  # any one of them in the reply or its quotes


def read_followups(path: str | Path | None = None) -> list[FollowUp]:
    """The set in `path`, or the bundled one: `first <TAB> follow-up <TAB> phrase | phrase`, # comments."""
    if path is None:
        text = resources.files("rag_bot.eval").joinpath("data", BUNDLED).read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--followups: cannot read {path}: {exc.strerror or exc}") from exc
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not all(part.strip() for part in parts):
            raise UsageError(f"--followups: line {number}: expected three tab-separated fields "
                             "(first question, follow-up, phrases)")
        items.append(FollowUp(parts[0].strip(), parts[1].strip(),
                              tuple(p.strip() for p in parts[2].split("|") if p.strip())))
    return items


@dataclass
class FollowUpRecord:
    item: FollowUp
    first_reason: str | None
    searched: str  # what the chain searched for the follow-up (its rewrite)
    reply: str
    quotes: list[str]
    reason: str | None
    seconds: float

    @property
    def answered(self) -> bool:
        shown = (self.reply + " " + " ".join(self.quotes)).lower()
        return self.reason is None and any(phrase.lower() in shown for phrase in self.item.expected)


def ask_followups(chain: Any, items: list[FollowUp]) -> list[FollowUpRecord]:
    """Each conversation: the first question, then the follow-up with the first reply as history."""
    records = []
    for item in items:
        first = chain.invoke(item.first)
        history = [{"role": "user", "content": item.first}, {"role": "assistant", "content": first["answer"]}]
        started = time.perf_counter()
        result = chain.invoke({"question": item.question, "history": history})
        records.append(FollowUpRecord(item, first["reason"], result["question"], result["answer"],
                                      [quote.text for quote in result["evidence"]], result["reason"],
                                      time.perf_counter() - started))
    return records


def summarize_followups(records: list[FollowUpRecord]) -> dict[str, Any]:
    """Shares of follow-ups answered, declined, abstained and rewritten, with the misses to read."""
    def share(test: Any) -> float:
        return round(sum(1 for r in records if test(r)) / len(records), 4) if records else 0.0

    return {"conversations": len(records), "answered": share(lambda r: r.answered),
            "declined": share(lambda r: r.reason == "out_of_scope"),
            "abstained": share(lambda r: r.reason in ("not_covered", "nothing_found")),
            "rewritten": share(lambda r: r.searched.strip() != r.item.question),
            "first_declined": share(lambda r: r.first_reason == "out_of_scope"),
            "seconds_p50": round(statistics.median(r.seconds for r in records), 2) if records else None,
            "misses": [{"first": r.item.first, "follow_up": r.item.question, "searched": r.searched,
                        "reason": r.reason, "reply": r.reply[:300]} for r in records if not r.answered]}


def format_followups(figures: dict[str, Any]) -> str:
    lines = [f"{figures['conversations']} two-turn conversations over examples/docs: follow-up answered "
             f"{figures['answered']:.1%}, declined {figures['declined']:.1%}, abstained {figures['abstained']:.1%}; "
             f"rewritten {figures['rewritten']:.1%}; first question declined {figures['first_declined']:.1%}; "
             f"follow-up p50 {figures['seconds_p50']} s"]
    for miss in figures["misses"]:
        lines.append(f"  missed: {miss['follow_up']!r} after {miss['first']!r}: searched {miss['searched']!r}, "
                     f"{miss['reason'] or 'answered without the expected words'}")
    return "\n".join(lines)

"""An answer as the edges outside the browser show it: one JSON object (`rag-bot ask --json`) or
terminal text as it streams (`rag-bot ask`). The UI renders the same chain events as HTML-safe
chat messages (ui.py)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator


def reply_json(result: dict[str, Any], full: bool = False) -> dict[str, Any]:
    """`RagChain.invoke()`'s result as plain JSON: answer, the question searched for (a follow-up rewritten:
    `rewritten`), declined, reason, grounded and `verification` (why a written answer did not stand), the word
    rules' findings (`rules`), evidence,
    scope, sources (`full`: each source with its snippet and scores) and, for "the documents don't
    say", the question's terms they never mention (`unmentioned`); `judge`: the answer judge's margin
    (null without a judge, or for a question it did not read)."""
    return {"answer": result["answer"], "searched_for": result["question"], "rewritten": result.get("rewritten", False),
            "declined": result["declined"], "reason": result["reason"],
            "unmentioned": result.get("unmentioned", []), "judge": result.get("judge"),
            "grounded": result["grounded"], "evidence": [quote.to_json() for quote in result["evidence"]],
            "verification": result.get("verification"), "rules": result.get("rules"),
            "scope": result["scope"], "sources": [source.to_json(full) for source in result["sources"]]}


def terminal_text(events: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Pieces of text to print as `RagChain.stream()` events arrive: the answer as it is written,
    the notice when it is replaced by the quotes, then the evidence (the closest passages' sentences
    when the documents don't say) and the numbered sources."""
    sources: list = []
    quotes: list = []
    quoted = abstained = False
    for event in events:
        abstained = abstained or "abstained" in event
        sources = event.get("sources", sources)
        quotes = event.get("evidence", quotes)
        quoted = quoted or bool(event.get("quoted"))
        if "answer" in event:
            yield event["answer"]
        if event.get("rewritten"):
            yield f"(Searched for: {event['question']})\n"
        if "final" in event:  # the written answer did not stand: what replaces it says why
            yield "\n\n" + event["final"]
    yield "\n"
    if quotes and not quoted:  # a reply made of the quotes already shows them
        heading = "\nClosest passages:\n" if abstained else "\nEvidence:\n"
        yield heading + "".join(f'[{quote.n}] "{quote.text}"\n' for quote in quotes)
    if sources:
        yield "\nSources:\n" + "".join(f"[{source.n}] {source.label()}\n" for source in sources)

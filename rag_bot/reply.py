"""An answer as plain text, as it streams: `rag-bot ask` and the OpenAI-compatible API's message. The
events are folded by `rag_bot.events.Reply` (the same fold as the chat UI's and `--json`'s); this
only decides what to print at each one."""

from __future__ import annotations

from typing import Iterable, Iterator

from .events import Event, Recited, Replaced, Reply, Searched, Text


def terminal_text(events: Iterable[Event], reply: Reply | None = None) -> Iterator[str]:
    """Pieces of text to print as the events arrive (each folded into `reply`): the answer as it is
    written, what replaces a written answer that did not stand (it says why), then the quotes (the
    closest passages' sentences when the documents don't say) and the numbered sources."""
    reply = reply if reply is not None else Reply()
    for event in events:
        reply.apply(event)
        if isinstance(event, Text):
            yield event.piece
        elif isinstance(event, Searched) and event.rewritten:
            yield f"(Searched for: {event.question})\n"
        elif isinstance(event, Replaced):
            yield "\n\n" + event.text
        elif isinstance(event, Recited):  # printed text cannot change: the answer again, its citations right
            yield "\n\nWith each citation on the passage that says it:\n" + event.text
    yield "\n"
    if reply.quotes_to_show:
        heading = "\nClosest passages:\n" if reply.abstained else "\nEvidence:\n"
        yield heading + "".join(f'[{quote.n}] "{quote.text}"\n' for quote in reply.quotes_to_show)
    if reply.sources:
        yield "\nSources:\n" + "".join(f"[{source.n}] {source.label()}\n" for source in reply.sources)

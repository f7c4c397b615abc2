"""What `RagChain.stream()` yields, one typed event per step of an answer, and `Reply`, the one fold
of them that every edge reads: `invoke()`, `rag-bot ask` (text and --json), the chat UI and the
OpenAI-compatible API.

The order of one answer:

    Searched                         the question searched for (a follow-up rewritten, or as asked)
    Declined, Text                   out of scope, or nothing found: the decline is the reply; or
    Found                            the sources and their quotes, shown at once, and the word rules
    Judged                           the model's reading of the quotes (margin; None when not read)
    Abstained, Text, Cited           the documents don't say; or
    Text ... [Abstained, Replaced]   the answer as it is written (the model itself found no answer), then
    Verified, [Replaced|Recited], Cited  whether it stands (a written answer that does not is replaced;
                                     one that stands with a citation moved is given again, re-cited)
    Finished                         the time each stage took

    from rag_bot import load_chain
    from rag_bot.events import Reply, Text

    reply = Reply()
    for event in load_chain().stream("how do I ingest a folder?"):
        reply.apply(event)
        if isinstance(event, Text):
            print(event.piece, end="")
    reply.sources, reply.evidence, reply.declined
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from .chain import Source, Verification
    from .evidence import Quote


@dataclass(frozen=True)
class Searched:
    """The question the answer is for: a follow-up rewritten to stand alone (`rewritten`), or as asked."""

    question: str
    rewritten: bool


@dataclass(frozen=True)
class Declined:
    """No answer is attempted: out of scope (`scope`: the gate's figures) or nothing found."""

    reason: str
    scope: dict[str, Any] | None = None


@dataclass(frozen=True)
class Found:
    """The numbered sources and their best sentences, before any model reads them; `rules`: what
    the word rules noticed."""

    sources: list[Source]
    evidence: list[Quote]
    strength: float | None
    rules: dict[str, Any] | None = None


@dataclass(frozen=True)
class Judged:
    """The judge model's margin for "the quotes answer the question" (None: it did not read them)."""

    margin: float | None


@dataclass(frozen=True)
class Abstained:
    """The documents don't say; `unmentioned`: the question's terms they never mention."""

    reason: str
    unmentioned: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Text:
    """A piece of the reply as it is written (or the whole of a reply that is not written)."""

    piece: str


@dataclass(frozen=True)
class Verified:
    """Whether the written answer stands (`Verification`: what no cited passage holds, the margin)."""

    verification: Verification


@dataclass(frozen=True)
class Replaced:
    """The reply written so far is replaced by `text` (a written answer that did not stand)."""

    text: str


@dataclass(frozen=True)
class Recited:
    """The written answer stands as `text`: the same words, a citation moved to the passage holding its facts."""

    text: str


@dataclass(frozen=True)
class Cited:
    """The quotes that go with the reply as it stands; `quoted`: the reply itself is made of them."""

    evidence: list[Quote]
    strength: float | None
    quoted: bool = False


@dataclass(frozen=True)
class Finished:
    """The answer is complete: milliseconds per stage."""

    timings: dict[str, float]


Event = Searched | Declined | Found | Judged | Abstained | Text | Verified | Replaced | Recited | Cited | Finished


@dataclass
class Reply:
    """The reply as it stands after the events applied so far."""

    question: str = ""
    rewritten: bool = False
    answer: str = ""
    declined: bool = False
    reason: str | None = None  # out_of_scope, nothing_found or not_covered
    scope: dict[str, Any] | None = None
    sources: list[Source] = field(default_factory=list)
    evidence: list[Quote] = field(default_factory=list)
    strength: float | None = None
    rules: dict[str, Any] | None = None
    judge: float | None = None
    unmentioned: list[str] = field(default_factory=list)
    verification: Verification | None = None
    quoted: bool = False  # the reply is made of its quotes
    replaced: bool = False  # the written answer did not stand
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, events: Iterable[Event]) -> "Reply":
        reply = cls()
        for event in events:
            reply.apply(event)
        return reply

    def apply(self, event: Event) -> "Reply":
        match event:
            case Searched(question, rewritten):
                self.question, self.rewritten = question, rewritten
            case Declined(reason, scope):
                self.declined, self.reason, self.scope = True, reason, scope
            case Found(sources, evidence, strength, rules):
                self.sources, self.evidence, self.strength, self.rules = sources, evidence, strength, rules
            case Judged(margin):
                self.judge = margin
            case Abstained(reason, unmentioned):
                self.reason, self.unmentioned = reason, unmentioned
            case Text(piece):
                self.answer += piece
            case Verified(verification):
                self.verification = verification
            case Replaced(text):
                self.answer, self.replaced = text, True
            case Recited(text):
                self.answer = text
            case Cited(evidence, strength, quoted):
                self.evidence, self.strength, self.quoted = evidence, strength, quoted
            case Finished(timings):
                self.timings = timings
        return self

    @property
    def abstained(self) -> bool:
        return not self.declined and self.reason is not None

    @property
    def grounded(self) -> bool | None:
        """Whether a written answer stood (True for a reply made of quotes; None when none was attempted)."""
        if self.verification is not None:
            return self.verification.grounded
        return True if self.quoted and not self.abstained else None

    @property
    def quotes_to_show(self) -> list[Quote]:
        """The quotes shown beside the reply: none when the reply is made of them or is a decline."""
        return [] if self.quoted or self.declined else self.evidence

    def result(self) -> dict[str, Any]:
        """`RagChain.invoke()`'s result: a dict, as LangChain runnables return."""
        return {"question": self.question, "answer": self.answer.strip(), "declined": self.declined,
                "reason": self.reason, "grounded": self.grounded, "evidence": self.evidence,
                "strength": self.strength, "sources": self.sources, "scope": self.scope, "timings": self.timings,
                "unmentioned": self.unmentioned, "judge": self.judge, "rewritten": self.rewritten,
                "rules": self.rules, "verification": None if self.verification is None else self.verification.to_json()}

    def to_json(self, full: bool = False) -> dict[str, Any]:
        """Plain JSON (`rag-bot ask --json`, the API's `rag_bot` field): answer, the question searched for
        (`rewritten`: a follow-up rewritten), declined (off the documents' topics), abstained (the
        documents do not answer it), reason (why either), grounded and `verification` (why a written
        answer did not stand), the word rules' findings (`rules`), evidence, scope, sources (`full`: each
        with its snippet and scores), the question's terms the documents never mention (`unmentioned`),
        and `judge`: the judge's margin (null without a judge, or for a question it did not read)."""
        result = self.result()
        return {"answer": result["answer"], "searched_for": self.question, "rewritten": self.rewritten,
                "declined": self.declined, "abstained": self.abstained, "reason": self.reason,
                "unmentioned": self.unmentioned,
                "judge": self.judge, "grounded": result["grounded"],
                "evidence": [quote.to_json() for quote in self.evidence], "verification": result["verification"],
                "rules": self.rules, "scope": self.scope, "sources": [source.to_json(full) for source in self.sources]}

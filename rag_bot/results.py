"""What a search gives back: the documents with the scope gate's verdict and per-stage timings
(`Retrieval`), and that verdict with what it was based on (`ScopeCheck`); each as JSON and as the
lines `rag-bot search` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from langchain_core.documents import Document


@dataclass
class Retrieval:
    """What one query gave: the documents, the scope decision, and milliseconds per stage."""

    documents: list[Document]
    declined: bool = False
    scope_score: float | None = None
    threshold: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    scope: "ScopeCheck | None" = None

    def to_json(self) -> dict[str, Any]:
        """The `rag-bot search --json` object (without the reranker's status)."""
        fields = ("source", "page", "heading", "chunk_index")
        scores = ("candidate_rank", "mmr_rank", "bm25_score", "rerank_score")
        return {
            "declined": self.declined, "scope_score": self.scope_score, "threshold": self.threshold,
            "scope": self.scope.to_json() if self.scope else None,
            "results": [{**{key: d.metadata.get(key) for key in fields}, "text": d.page_content,
                         **{key: d.metadata.get(key) for key in scores}} for d in self.documents],
            "timings_ms": {stage: round(ms, 2) for stage, ms in self.timings.items()},
        }

    def lines(self) -> list[str]:
        """What `rag-bot search` prints: the decline with its reason, or each passage with its scores."""
        if self.declined and self.scope is not None:
            return [f"Declined: the question looks out of scope for these documents ({self.scope.why()}).",
                    *(["The documents are about: " + "; ".join(self.scope.about)] if self.scope.about else [])]
        if not self.documents:
            return ["Nothing relevant found."]
        lines = []
        for number, doc in enumerate(self.documents, 1):
            meta = doc.metadata
            where = meta["source"] + (f", page {meta['page']}" if meta.get("page") else "")
            where += f" — {meta['heading']}" if meta.get("heading") else ""
            scores = [f"candidate #{meta.get('candidate_rank')}"]
            if meta.get("rerank_score") is not None:
                scores.insert(0, f"rerank {meta['rerank_score']:.3f}")
            scores += [f"mmr #{meta['mmr_rank']}"] if meta.get("mmr_rank") and meta.get("rrf_score") else []
            scores += [f"bm25 {meta['bm25_score']:.2f}"] if meta.get("bm25_score") is not None else []
            scores += [f"scope {meta['scope_score']:.2f}"] if meta.get("scope_score") is not None else []
            snippet = " ".join(doc.page_content.split())
            lines.append(f"{number}. {where}\n   {' · '.join(scores)}\n   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")
        return lines


@dataclass
class ScopeCheck:
    """The gate's verdict on one question, with what it was based on (for "why was this declined?")."""

    score: float
    threshold: float
    features: dict[str, float]
    nearest: dict[str, Any]  # the nearest chunk: source, page, heading, similarity
    about: list[str]  # the collection's main files and headings
    injection: float | None = None  # the injection check's score (None: no check)
    injection_threshold: float | None = None
    sentence: float | None = None  # the best similarity of a sentence of the nearest chunks (None: not looked at)
    sentence_level: float | None = None
    own_question: bool = False  # the user asks how they do something: the injection check does not veto it
    second_opinion: float | None = None  # the model's margin over the passages, asked after the gate declined
    # a question the gate declined on topic: does the collection hold every content word of it (None: not
    # looked, no keyword index or a collection whose words most off-topic messages use too), and the share of
    # the bundled off-topic messages whose words it holds all of
    words_held: bool | None = None
    off_topic_held: float | None = None

    @property
    def rescued(self) -> bool:
        """Whether a question the gate scored below its threshold is let through by the second look: a
        sentence of the collection closer to it than to any known off-topic message."""
        return (self.score < self.threshold and self.sentence is not None and self.sentence_level is not None
                and self.sentence >= self.sentence_level)

    @property
    def instruction(self) -> bool:
        """Whether the injection check found the message instructs the assistant rather than asks."""
        return (self.injection is not None and self.injection_threshold is not None
                and self.injection >= self.injection_threshold and not self.own_question)

    @property
    def declined(self) -> bool:
        return (self.score < self.threshold and not self.rescued) or self.instruction

    def to_json(self) -> dict[str, Any]:
        found = {"score": round(self.score, 4), "threshold": round(self.threshold, 4),
                 "features": {name: round(value, 4) for name, value in self.features.items()},
                 "nearest": self.nearest, "about": self.about}
        if self.injection is not None and self.injection_threshold is not None:
            injection: dict[str, Any] = {"score": round(self.injection, 4),
                                         "threshold": round(self.injection_threshold, 4), "declined": self.instruction}
            if self.own_question:
                injection["own_question"] = True
            found["injection"] = injection
        if self.second_opinion is not None:
            found["second_opinion"] = round(self.second_opinion, 4)
        if self.words_held is not None:
            found["words"] = {"all_in_collection": self.words_held, "off_topic_share": self.off_topic_held}
        if self.sentence is not None and self.sentence_level is not None:
            found["sentence"] = {"similarity": round(self.sentence, 4), "level": round(self.sentence_level, 4),
                                 "rescued": self.rescued}
        return found

    def why(self) -> str:
        """One sentence: the score against the threshold and the nearest document (or, for a message the
        injection check caught, that it reads as an instruction to the assistant)."""
        if self.instruction and self.score >= self.threshold:
            return (f"it reads as an instruction to the assistant rather than a question about the documents: "
                    f"injection check {self.injection:.2f}, limit {self.injection_threshold:.2f}")
        near = self.nearest
        where = near.get("source") or "?"
        if near.get("heading"):
            where += f' "{near["heading"]}"'
        return (f"scope score {self.score:.2f} is below the threshold {self.threshold:.2f}; the closest passage "
                f"({where}) has similarity {near.get('similarity', 0.0):.2f}")

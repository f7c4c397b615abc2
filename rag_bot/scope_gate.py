"""The scope gate as one stage: is a question about this collection? Its evidence in the collection (the
nearest chunks), its nearness to known off-topic messages, the injection check on its form, the second look
at single sentences and the lexical look at its words, combined by the trained `ScopeFilter`.

    gate = ScopeGate.load(config, embeddings)
    [check] = gate.check(collection, bm25, [vector], [question])   # check.declined, check.why()
"""

from __future__ import annotations

import logging
from typing import Any

from .config import Config
from .errors import ModelError
from .filter import NEAREST, ScopeFilter, filter_path, gate_features, injection_scores, sentence_similarities
from .injections import own_question
from .protocols import ChunkCollection, Embedder, KeywordIndex
from .results import ScopeCheck
from .store import nearest_chunks

log = logging.getLogger(__name__)

# The lexical look counts only where at most this share of the bundled off-topic messages has every content word
# in the collection (examples/docs: 6 of 168, 3.6%; BENCHMARKS.md, session 25).
WORDS_TELL = 0.05
NOT_TRAINED = "filter.enabled: no scope filter is loaded; run `rag-bot train-filter --from-corpus`"


class ScopeGate:
    """The trained scope filter (or None: every question passes) with what it needs at hand: the embedder
    for its off-topic messages (embedded once) and the settings of `filter.*`."""

    def __init__(self, config: Config, embeddings: Embedder, scope: ScopeFilter | None) -> None:
        self.config, self.embeddings = config, embeddings
        self._filter = scope
        self._negative_vectors: Any = None
        self._words_share: tuple[Any, Any, float] | None = None

    @classmethod
    def load(cls, config: Config, embeddings: Embedder) -> "ScopeGate":
        """The gate trained for the configured collection (`data_dir/filters/`), or an open one."""
        return cls(config, embeddings, load_scope_filter(config))

    @property
    def filter(self) -> ScopeFilter | None:
        return self._filter

    @filter.setter
    def filter(self, scope: ScopeFilter | None) -> None:
        self._filter, self._negative_vectors = scope, None

    def reload(self) -> None:
        """Read the filter file again (it was retrained)."""
        self.filter = load_scope_filter(self.config)

    @property
    def threshold(self) -> float:
        """`filter.threshold` when set, else the level the filter was calibrated to."""
        configured = self.config.filter.threshold
        if configured is not None:
            return configured
        if self._filter is None:
            raise ModelError(NOT_TRAINED)
        return self._filter.threshold

    def check(self, collection: ChunkCollection, bm25: KeywordIndex | None, vectors: list[list[float]],
              texts: list[str] | None = None) -> list[ScopeCheck]:
        """The gate's verdict on each question vector (batched store queries). With the questions' `texts`,
        the injection check also scores each with its quoted spans left out, and a question declined on topic
        gets the lexical look at its words (`bm25`)."""
        scope = self._filter
        if scope is None:
            raise ModelError(NOT_TRAINED)
        if self._negative_vectors is None:
            self._negative_vectors = self.embeddings.embed_documents(scope.negatives)
        similarities, metadatas, ids = nearest_chunks(collection, vectors, NEAREST)
        features = gate_features(vectors, similarities, self._negative_vectors)
        scores = scope.score(features)
        injection = injection_scores(scope, vectors, texts, self.embeddings) if self.config.filter.injections else None
        checks = []
        for i, score in enumerate(scores):
            meta = metadatas[i][0] if metadatas[i] else {}
            nearest = {"source": meta.get("source"), "page": meta.get("page"), "heading": meta.get("heading") or None,
                       "similarity": round(similarities[i][0], 4)}
            checks.append(ScopeCheck(score, self.threshold, {name: float(values[i]) for name, values in features.items()},
                                     nearest, list(scope.about),
                                     injection[i] if injection else None,
                                     scope.injection_threshold if injection else None,
                                     own_question=texts is not None and own_question(texts[i])))
        level = scope.sentence_level
        if self.config.filter.sentences and level is not None:  # the second look: only what the gate declines on topic
            looked = [i for i, check in enumerate(checks) if check.score < check.threshold and not check.instruction]
            found = sentence_similarities(collection, self.embeddings, [vectors[i] for i in looked],
                                          [ids[i] for i in looked])
            for i, similarity in zip(looked, found):
                checks[i].sentence, checks[i].sentence_level = similarity, level
        if texts is not None and bm25 is not None:
            self._look_at_words(bm25, checks, texts)
        return checks

    def _look_at_words(self, bm25: KeywordIndex, checks: list[ScopeCheck], texts: list[str]) -> None:
        """The lexical look at what the gate declined on topic: does the collection hold every content word of
        the question ("how do I add my own files?" over documents about adding files)? Only where the
        collection's words tell: at most `WORDS_TELL` of the bundled off-topic messages have all of theirs in it
        (in a large collection nearly every word of any message is somewhere). The model's second opinion then
        asks less (`chain.second_opinion`)."""
        share = self._off_topic_held(bm25)
        if share is None or share > WORDS_TELL:
            return
        for check, text in zip(checks, texts):
            if check.declined and not check.instruction:
                check.words_held, check.off_topic_held = bm25.holds_words(text), share

    def _off_topic_held(self, bm25: KeywordIndex) -> float | None:
        """The share of the gate's off-topic messages whose content words the collection all holds (once per
        keyword index and filter)."""
        scope = self._filter
        if scope is None or not scope.negatives:
            return None
        cached = self._words_share  # for the index and filter it was counted with (not their ids, which are reused)
        if cached is None or cached[0] is not bm25 or cached[1] is not scope:
            held = sum(bm25.holds_words(text) for text in scope.negatives)
            cached = self._words_share = (bm25, scope, held / len(scope.negatives))
        return cached[2]


def load_scope_filter(config: Config) -> ScopeFilter | None:
    """The trained filter of the configured collection; None when `filter.enabled` is off or none is trained
    yet (then every question passes, with a warning)."""
    if not config.filter.enabled:
        return None
    path = filter_path(config)
    if not path.exists():
        log.warning("no scope filter trained yet: every question is answered; run `rag-bot train-filter --from-corpus`")
        return None
    scope = ScopeFilter.load(path)
    if scope.embedding_model != config.embedding.model:
        raise ModelError(f"embedding.model: the scope filter at {path} was trained with {scope.embedding_model!r}; "
                         f"retrain it with `rag-bot train-filter`, or set filter.enabled: false")
    return scope

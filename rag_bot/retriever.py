"""The retriever: scope gate -> MMR (or hybrid MMR + BM25) candidates -> cross-encoder rerank.

`RagRetriever` is a LangChain `BaseRetriever`: `invoke()` / `ainvoke()` return `Document`s whose
metadata keeps `source`, `page`, `heading`, `chunk_index` and adds `candidate_rank` (1-based rank in
the candidate list the reranker reads), `mmr_rank` (rank among the MMR candidates; None for a chunk
only BM25 found), `bm25_score` (hybrid), `rerank_score` and `scope_score`. `search()` returns the same documents plus
the gate's decision (`declined`, `scope_score`, `threshold`, and in `scope` the features, the
nearest chunk and what the collection is about) and per-stage timings. A declined query returns no
documents, before any passage is read.

    from rag_bot import load_retriever
    retriever = load_retriever("config.yaml")
    docs = retriever.invoke("how do I rebuild the collection?", sources="*.md")
    result = retriever.search("what's the weather like?")   # result.declined, result.scope_score
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any, Callable, Hashable, Iterator, Sequence

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, PrivateAttr, SkipValidation

from .config import Config, load_config
from .errors import ModelError, StoreError
from .filter import NEAREST, ScopeFilter, filter_path, gate_features, injection_scores, sentence_similarities
from .injections import own_question
from .models import LocalEmbeddings, open_reranker, precision_context
from .protocols import ChunkCollection, CrossEncoderModel, Embedder, KeywordIndex, StoreClient
from .results import Retrieval, ScopeCheck
from .store import (META_LEASE, META_VERSION, check_encoder, check_model, get_collection, nearest_chunks, open_client,
                    open_vectorstore, pages, reopen_client, server_errors, store_location)

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 1.0  # how often a long-lived retriever asks the store whether an ingest changed it
# The lexical look counts only where at most this share of the bundled off-topic messages has every content word
# in the collection (examples/docs: 6 of 168, 3.6%; BENCHMARKS.md, session 25).
WORDS_TELL = 0.05


class RagRetriever(BaseRetriever):
    """MMR candidates from Chroma (fused with BM25 when hybrid), reranked by a cross-encoder,
    behind a scope filter. Build it with `load_retriever()`.

    Per call, `filter=` takes a Chroma `where` dict (`{"source": "faq.html"}`) and `sources=`
    one glob or a list of globs over the `source` path (`"guides/*.md"`); `k=` overrides
    `reranker.top_n` (or `retriever.k` without a reranker).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # (the models are passed in as loaded; pydantic checks only the config)
    config: Config
    embeddings: SkipValidation[Embedder]
    vectorstore: SkipValidation[VectorStore]  # langchain-chroma's Chroma
    client: SkipValidation[StoreClient]  # the chromadb client, to notice a re-created collection
    collection: SkipValidation[ChunkCollection]  # the collection behind `vectorstore`, for reads its wrapper lacks
    reranker: SkipValidation[CrossEncoderModel | None] = None
    reranker_status: str = ""  # "on: MODEL (where from)" or "off: why", for stats, search --json and the UI
    scope: ScopeFilter | None = None
    bm25: SkipValidation[KeywordIndex | None] = None
    _source_cache: tuple[int, set[str]] | None = PrivateAttr(default=None)
    _negative_vectors: Any = PrivateAttr(default=None)
    _words_share: tuple[Any, Any, float] | None = PrivateAttr(default=None)
    _seen: tuple | None = PrivateAttr(default=None)  # (collection id, version stamp, filter file mtime)
    _checked_at: float = PrivateAttr(default=0.0)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        return self.search(query, **kwargs).documents

    def search(self, query: str, *, filter: dict | None = None, sources: str | list[str] | None = None,
               k: int | None = None, gate: bool = True) -> Retrieval:
        """Run the stages for one query; see the class docstring for the arguments. `gate=False`: the
        passages even when the gate declines (its verdict still in `scope`), for a second opinion."""
        with server_errors(self.config, "the search"):
            self.follow_store()
            with _rebuilding(self):
                return self._search(query, filter, sources, k, gate)

    def _search(self, query: str, filter: dict | None, sources: str | list[str] | None, k: int | None,
                gate: bool = True) -> Retrieval:
        timings: dict[str, float] = {}
        clock = _Clock(timings)
        with clock("embed"):
            vector = self.embeddings.embed_query(query)
        check = None
        if self.scope is not None:
            with clock("filter"):
                check = self.check_scope(vector, query)
            if check.declined and gate:
                return Retrieval([], True, check.score, check.threshold, timings, check)
        where = self._where(filter, sources)
        with clock("mmr"):
            candidates = self.mmr(vector, where)
        if self.bm25 is not None:
            with clock("bm25"):
                candidates = self.fuse(candidates, self.keyword(query, where))
        if self.reranker is not None:
            with clock("rerank"):
                candidates = self.rerank(query, candidates, k or self.config.reranker.top_n)
        elif k is not None:
            candidates = candidates[:k]
        scope_score = check.score if check else None
        for doc in candidates:
            for key in ("page", "heading", "rerank_score"):  # every document has the same keys
                doc.metadata.setdefault(key, None)
            doc.metadata["scope_score"] = scope_score
        return Retrieval(candidates, False, scope_score, check.threshold if check else None, timings, check)

    def check_scope(self, vector: list[float], text: str | None = None) -> ScopeCheck:
        """The scope gate on a question's vector: its evidence in the collection (nearest chunks) and
        its nearness to known off-topic messages, combined by the trained gate. With the question's
        `text`, the injection check also scores it with its quoted spans left out (`without_quotes`)."""
        return self.check_scopes([vector], None if text is None else [text])[0]

    def check_scopes(self, vectors: list[list[float]], texts: list[str] | None = None) -> list[ScopeCheck]:
        """`check_scope` for many questions at once (batched store queries), for evaluation."""
        self.follow_store()
        if self.scope is None:
            raise ModelError("filter.enabled: no scope filter is loaded; run `rag-bot train-filter --from-corpus`")
        if self._negative_vectors is None:
            self._negative_vectors = self.embeddings.embed_documents(self.scope.negatives)
        similarities, metadatas, ids = nearest_chunks(self.collection, vectors, NEAREST)
        features = gate_features(vectors, similarities, self._negative_vectors)
        scores = self.scope.score(features)
        injection = (injection_scores(self.scope, vectors, texts, self.embeddings) if self.config.filter.injections
                     else None)
        checks = []
        for i, score in enumerate(scores):
            meta = metadatas[i][0] if metadatas[i] else {}
            nearest = {"source": meta.get("source"), "page": meta.get("page"), "heading": meta.get("heading") or None,
                       "similarity": round(similarities[i][0], 4)}
            checks.append(ScopeCheck(score, self.threshold, {name: float(values[i]) for name, values in features.items()},
                                     nearest, list(self.scope.about),
                                     injection[i] if injection else None,
                                     self.scope.injection_threshold if injection else None,
                                     own_question=texts is not None and own_question(texts[i])))
        level = self.scope.sentence_level
        if self.config.filter.sentences and level is not None:  # the second look: only what the gate declines on topic
            looked = [i for i, check in enumerate(checks) if check.score < check.threshold and not check.instruction]
            found = sentence_similarities(self.collection, self.embeddings, [vectors[i] for i in looked],
                                          [ids[i] for i in looked])
            for i, similarity in zip(looked, found):
                checks[i].sentence, checks[i].sentence_level = similarity, level
        if texts is not None:
            self._look_at_words(checks, texts)
        return checks

    def _look_at_words(self, checks: list[ScopeCheck], texts: list[str]) -> None:
        """The lexical look at what the gate declined on topic: does the collection hold every content word of
        the question ("how do I add my own files?" over documents about adding files)? Only where the
        collection's words tell: at most `WORDS_TELL` of the bundled off-topic messages have all of theirs in it
        (in a large collection nearly every word of any message is somewhere). The model's second opinion then
        asks less (`chain.second_opinion`)."""
        share = self._off_topic_held()
        if share is None or share > WORDS_TELL or self.bm25 is None:  # (bm25 checked again for the type checker)
            return
        for check, text in zip(checks, texts):
            if check.declined and not check.instruction:
                check.words_held, check.off_topic_held = self.bm25.holds_words(text), share

    def _off_topic_held(self) -> float | None:
        """The share of the gate's off-topic messages whose content words the collection all holds (once per
        keyword index and filter)."""
        if self.bm25 is None or self.scope is None or not self.scope.negatives:
            return None
        cached = self._words_share  # for the index and filter it was counted with (not their ids, which are reused)
        if cached is None or cached[0] is not self.bm25 or cached[1] is not self.scope:
            held = sum(self.bm25.holds_words(text) for text in self.scope.negatives)
            cached = self._words_share = (self.bm25, self.scope, held / len(self.scope.negatives))
        return cached[2]

    def warm_up(self) -> None:
        """Load now what the first search would load (the embedding model, the off-topic messages'
        vectors, the store's vector index, the cross-encoder), so that the first question is as quick as
        the next ones. Runs the stages on a throwaway query; returns nothing."""
        query = "warm up"
        vector = self.embeddings.embed_query(query)
        if self.scope is not None:
            self.check_scope(vector, query)
        candidates = self.mmr(vector)
        if self.reranker is not None and candidates:
            self.rerank(query, candidates[:2], 1)

    def candidates(self, query: str, *, filter: dict | None = None) -> list[Document]:
        """What the reranker would read for `query`: MMR (fused with BM25 when hybrid is on), in
        order; no scope filter, no rerank. Used to mine hard negatives for training a reranker."""
        self.follow_store()
        vector = self.embeddings.embed_query(query)
        candidates = self.mmr(vector, filter)
        if self.bm25 is not None:
            candidates = self.fuse(candidates, self.keyword(query, filter))
        return candidates

    def follow_store(self) -> None:
        """Keep a long-lived retriever (the chat server) in step with ingests run elsewhere: when
        the collection was re-created (`--rebuild`) or an ingest stamped a new version, reopen it and
        its BM25 index; when the scope filter file changed, reload it. Asks the store at most once
        per `FOLLOW_SECONDS`. A collection that is missing or being rebuilt is a `StoreError` that
        says to try again in a moment."""
        now = time.monotonic()
        if now - self._checked_at < FOLLOW_SECONDS:
            return
        name = self.config.store.collection
        current = get_collection(self.client, name)
        if current is None:
            raise _being_rebuilt(name)
        metadata = current.metadata or {}
        seen = (str(current.id), metadata.get(META_VERSION), _mtime(filter_path(self.config)))
        if self._seen is not None and seen[:2] != self._seen[:2]:
            if metadata.get(META_VERSION) is None and metadata.get(META_LEASE):
                raise _being_rebuilt(name)  # a new collection that its first ingest has not finished
            log.info("collection %r changed: reopening it", name)
            self._reopen()
        if self._seen is not None and seen[2] != self._seen[2]:
            log.info("scope filter changed: reloading it")
            self.scope = _load_scope(self.config)
            self._negative_vectors = None
        self._seen = seen
        self._checked_at = now

    def _reopen(self) -> None:
        client = reopen_client(self.config)
        collection = get_collection(client, self.config.store.collection)
        if collection is None:
            raise _being_rebuilt(self.config.store.collection)
        check_model(collection, self.config.embedding.model, what="query")
        check_encoder(collection, self.embeddings, self.config.chunking.context_header, what="query")
        self.client, self.collection = client, collection
        self.vectorstore = open_vectorstore(self.config, self.embeddings, client)
        if self.bm25 is not None:
            from .bm25 import load_bm25

            self.bm25 = load_bm25(self.config, collection)
        self._source_cache = None

    def recheck(self) -> None:
        """Make the next query look at the store again (see `follow_store`)."""
        self._checked_at = 0.0

    @property
    def threshold(self) -> float:
        configured = self.config.filter.threshold
        if configured is not None:
            return configured
        if self.scope is None:
            raise ModelError("filter.enabled: no scope filter is loaded; run `rag-bot train-filter --from-corpus`")
        return self.scope.threshold

    # stages: public so that evaluation and training run exactly what a search runs

    def mmr(self, vector: list[float], where: dict | None = None) -> list[Document]:
        """Dense candidates: Chroma's maximal marginal relevance over the `retriever.fetch_k` nearest
        chunks, `retriever.k` kept; each gets `mmr_rank` and `candidate_rank`."""
        settings = self.config.retriever
        docs = self.vectorstore.max_marginal_relevance_search_by_vector(
            vector, k=settings.k, fetch_k=settings.fetch_k, lambda_mult=settings.lambda_mult, filter=where)
        for rank, doc in enumerate(docs, 1):
            doc.metadata["mmr_rank"] = doc.metadata["candidate_rank"] = rank
        return docs

    def keyword(self, query: str, where: dict | None = None) -> list[Document]:
        """Keyword candidates: the BM25 index's best `retriever.fetch_k` chunks (within `where`),
        each with its `bm25_score`. Needs `retriever.hybrid` (the BM25 index)."""
        if self.bm25 is None:
            raise ModelError("retriever.hybrid: no BM25 index is loaded; set retriever.hybrid: true")
        hits = self.bm25.search(query, self.config.retriever.fetch_k)
        if not hits:
            return []
        got = self.collection.get(ids=[chunk_id for chunk_id, _ in hits], where=where,
                                  include=["documents", "metadatas"])
        by_id = {i: Document(page_content=d, metadata=m or {}, id=i)
                 for i, d, m in zip(got["ids"], got["documents"], got["metadatas"])}
        docs = []
        for chunk_id, score in hits:
            if chunk_id in by_id:
                by_id[chunk_id].metadata["bm25_score"] = score
                docs.append(by_id[chunk_id])
        return docs

    def fuse(self, dense: list[Document], keyword: list[Document]) -> list[Document]:
        """The dense and keyword candidates merged by reciprocal rank fusion (`retriever.rrf_k`);
        keeps `retriever.k` documents, each with `rrf_score` and its `candidate_rank` in the fused list."""
        scores = rrf([dense, keyword], self.config.retriever.rrf_k, key=lambda doc: doc.id)
        docs: dict[str | None, Document] = {}
        for doc in [*dense, *keyword]:
            if doc.id in docs:
                docs[doc.id].metadata.update({**doc.metadata, **docs[doc.id].metadata})
            else:
                docs[doc.id] = doc
        fused = sorted(docs.values(), key=lambda d: -scores[d.id])[: self.config.retriever.k]
        for rank, doc in enumerate(fused, 1):
            doc.metadata["rrf_score"] = scores[doc.id]
            doc.metadata["candidate_rank"] = rank
            doc.metadata.setdefault("mmr_rank", None)
        return fused

    def rerank(self, query: str, docs: list[Document], top_n: int) -> list[Document]:
        """The candidates reordered by the cross-encoder (each gets `rerank_score`), fused with their
        incoming order when `reranker.fuse`, filtered by `reranker.min_score`; `top_n` kept."""
        if not docs:
            return []
        if self.reranker is None:
            raise ModelError("reranker.enabled: no cross-encoder is loaded; see `rag-bot models list`")
        settings = self.config.reranker
        with precision_context(settings.device, settings.precision):
            scores = self.reranker.predict([(query, d.page_content) for d in docs],
                                           batch_size=settings.batch_size, show_progress_bar=False)
        for doc, score in zip(docs, scores):
            doc.metadata["rerank_score"] = float(score)
        ranked = sorted(docs, key=lambda d: -d.metadata["rerank_score"])
        if settings.fuse:  # reciprocal rank fusion with the order the candidates came in
            fused = rrf([docs, ranked], self.config.retriever.rrf_k, key=id)
            ranked = sorted(docs, key=lambda d: -fused[id(d)])
        if settings.min_score is not None:
            ranked = [d for d in ranked if d.metadata["rerank_score"] >= settings.min_score]
        return ranked[:top_n]

    def _where(self, where: dict | None, sources: str | list[str] | None) -> dict | None:
        if sources is None:
            return where
        patterns = [sources] if isinstance(sources, str) else list(sources)
        matching = sorted(s for s in self._sources() if any(fnmatchcase(s, p) for p in patterns))
        source_where = {"source": {"$in": matching or ["\0no match"]}}
        return {"$and": [where, source_where]} if where else source_where

    def _sources(self) -> set[str]:
        """Every `source` in the collection, cached until the chunk count changes."""
        collection = self.collection
        count = collection.count()
        if self._source_cache is None or self._source_cache[0] != count:
            sources = {(m or {}).get("source", "") for page in pages(collection, ["metadatas"]) for m in page["metadatas"]}
            self._source_cache = (count, sources)
        return self._source_cache[1]


def rrf(rankings: Sequence[Sequence[Any]], k: int, key: Callable[[Any], Hashable] = lambda item: item) -> dict:
    """Reciprocal rank fusion: each item's sum over the rankings of 1 / (k + its 1-based rank)."""
    scores: dict = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[key(item)] = scores.get(key(item), 0.0) + 1.0 / (k + rank)
    return scores


def _mtime(path: Any) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def _being_rebuilt(name: str) -> StoreError:
    return StoreError(f"store.collection: {name!r} is being rebuilt (or was deleted); try again in a moment, "
                      f"or run `rag-bot ingest DIR` if nothing is running")


@contextmanager
def _rebuilding(retriever: "RagRetriever") -> Iterator[None]:
    """Chroma's "collection does not exist" during a query (a rebuild started just now) becomes the
    same `StoreError`, and the next query looks at the store again."""
    try:
        yield
    except Exception as exc:
        if type(exc).__name__ != "NotFoundError":
            raise
        retriever.recheck()
        raise _being_rebuilt(retriever.config.store.collection) from exc


class _Clock:
    """`with clock("stage"):` adds the stage's milliseconds to the timings dict."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings
        self._stage = ""
        self._start = 0.0

    def __call__(self, stage: str) -> "_Clock":
        self._stage = stage
        return self

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self._stage] = (time.perf_counter() - self._start) * 1000


def load_retriever(config: str | Config | None = None, *, embeddings: Any = None,
                   reranker: Any = None, reranker_status: str | None = None) -> RagRetriever:
    """The retriever over the ingested collection, with every configured stage loaded once.

    `config` is a path, a `Config`, or None (see `load_config`). `embeddings` and `reranker`
    may be passed in to share already loaded models (`reranker_status` says what that reranker is).
    """
    config = config if isinstance(config, Config) else load_config(config)
    client = open_client(config)
    collection = get_collection(client, config.store.collection)
    if collection is None or collection.count() == 0:
        raise StoreError(f"store.collection: no documents in collection {config.store.collection!r} at "
                         f"{store_location(config)}; run `rag-bot ingest DIR` first")
    check_model(collection, config.embedding.model, what="query")
    embeddings = embeddings if embeddings is not None else LocalEmbeddings(config.embedding)
    check_encoder(collection, embeddings, config.chunking.context_header, what="query")
    if config.reranker.enabled is False:
        reranker, status = None, "off (reranker.enabled: false)"
    elif reranker is not None:
        status = reranker_status or "on: the cross-encoder passed in"
    else:
        reranker, status = open_reranker(config.reranker)
    bm25 = None
    if config.retriever.hybrid:
        from .bm25 import load_bm25

        bm25 = load_bm25(config, collection)
    retriever = RagRetriever(config=config, embeddings=embeddings, vectorstore=open_vectorstore(config, embeddings, client),
                             client=client, collection=collection, reranker=reranker, reranker_status=status, scope=_load_scope(config), bm25=bm25)
    retriever.follow_store()  # what it opened is what it has seen
    return retriever


def _load_scope(config: Config) -> ScopeFilter | None:
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

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
from fnmatch import fnmatchcase
from typing import Any, Callable, Hashable, Sequence

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from pydantic import ConfigDict, SkipValidation

from .config import Config, load_config
from .errors import ModelError
from .filter import ScopeFilter
from .live import LiveCollection
from .models import LocalEmbeddings, open_reranker, precision_context
from .protocols import ChunkCollection, CrossEncoderModel, Embedder, KeywordIndex, StoreClient
from .results import Retrieval, ScopeCheck
from .scope_gate import NOT_TRAINED, ScopeGate
from .store import server_errors

log = logging.getLogger(__name__)


class RagRetriever(BaseRetriever):
    """MMR candidates from Chroma (fused with BM25 when hybrid), reranked by a cross-encoder,
    behind the scope gate. Build it with `load_retriever()`: it opens the collection as a
    `LiveCollection` (followed as ingests change it) and the `ScopeGate`, and keeps the stages.

    Per call, `filter=` takes a Chroma `where` dict (`{"source": "faq.html"}`) and `sources=`
    one glob or a list of globs over the `source` path (`"guides/*.md"`); `k=` overrides
    `reranker.top_n` (or `retriever.k` without a reranker).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # (the models are passed in as loaded; pydantic checks only the config)
    config: Config
    embeddings: SkipValidation[Embedder]
    live: SkipValidation[LiveCollection | None] = None  # the collection, its vector store and BM25, followed
    gate: SkipValidation[ScopeGate | None] = None  # the scope gate (its filter None: every question passes)
    reranker: SkipValidation[CrossEncoderModel | None] = None
    reranker_status: str = ""  # "on: MODEL (where from)" or "off: why", for stats, search --json and the UI

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs: Any) -> list[Document]:
        return self.search(query, **kwargs).documents

    def search(self, query: str, *, filter: dict | None = None, sources: str | list[str] | None = None,
               k: int | None = None, gate: bool = True) -> Retrieval:
        """Run the stages for one query; see the class docstring for the arguments. `gate=False`: the
        passages even when the gate declines (its verdict still in `scope`), for a second opinion."""
        with server_errors(self.config, "the search"):
            self.follow_store()
            with self._live.rebuilding():
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
        if self.gate is None or self.gate.filter is None:
            raise ModelError(NOT_TRAINED)
        return self.gate.check(self._live.collection, self._live.bm25, vectors, texts)

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
        """Keep a long-lived retriever (the chat server) in step with ingests run elsewhere
        (`LiveCollection.follow`: a re-created or re-stamped collection reopened, a retrained gate reloaded)."""
        self._live.follow()

    def recheck(self) -> None:
        """Make the next query look at the store again (see `follow_store`)."""
        self._live.recheck()

    @property
    def threshold(self) -> float:
        if self.gate is None:
            raise ModelError(NOT_TRAINED)
        return self.gate.threshold

    # what the live collection and the gate hold, under the names a retriever has always had

    @property
    def scope(self) -> ScopeFilter | None:
        """The trained scope filter, None when there is none (every question passes)."""
        return self.gate.filter if self.gate is not None else None

    @scope.setter
    def scope(self, scope: ScopeFilter | None) -> None:
        if self.gate is None:
            self.gate = ScopeGate(self.config, self.embeddings, scope)
        else:
            self.gate.filter = scope

    @property
    def collection(self) -> ChunkCollection:
        return self._live.collection

    @property
    def client(self) -> StoreClient:
        return self._live.client

    @property
    def vectorstore(self) -> VectorStore:
        return self._live.vectorstore

    @property
    def bm25(self) -> KeywordIndex | None:
        return self.live.bm25 if self.live is not None else None

    @property
    def _live(self) -> LiveCollection:
        if self.live is None:
            raise ModelError("store.collection: this retriever was made without a collection; use load_retriever()")
        return self.live

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
        matching = sorted(s for s in self._live.sources() if any(fnmatchcase(s, p) for p in patterns))
        source_where = {"source": {"$in": matching or ["\0no match"]}}
        return {"$and": [where, source_where]} if where else source_where

def rrf(rankings: Sequence[Sequence[Any]], k: int, key: Callable[[Any], Hashable] = lambda item: item) -> dict:
    """Reciprocal rank fusion: each item's sum over the rankings of 1 / (k + its 1-based rank)."""
    scores: dict = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[key(item)] = scores.get(key(item), 0.0) + 1.0 / (k + rank)
    return scores


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
    embeddings = embeddings if embeddings is not None else LocalEmbeddings(config.embedding)
    live = LiveCollection.open(config, embeddings)  # first: an empty store says to run the ingest
    gate = live.gate = ScopeGate.load(config, embeddings)
    if config.reranker.enabled is False:
        reranker, status = None, "off (reranker.enabled: false)"
    elif reranker is not None:
        status = reranker_status or "on: the cross-encoder passed in"
    else:
        reranker, status = open_reranker(config.reranker)
    return RagRetriever(config=config, embeddings=embeddings, live=live, gate=gate, reranker=reranker,
                        reranker_status=status)

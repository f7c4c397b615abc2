"""The collection as a long-lived reader (the chat server, the API) sees it: the Chroma client, the
collection, LangChain's vector store over it and the BM25 index, kept in step with ingests run elsewhere.

    live = LiveCollection.open(config, embeddings, gate)   # "run rag-bot ingest DIR first" when empty
    live.follow()          # before each query: reopens after an ingest, reloads a retrained gate
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from langchain_core.vectorstores import VectorStore

from .config import Config
from .errors import StoreError
from .filter import filter_path
from .protocols import ChunkCollection, Embedder, KeywordIndex, StoreClient
from .scope_gate import ScopeGate
from .store import (META_LEASE, META_VERSION, check_encoder, check_model, get_collection, open_client, open_vectorstore,
                    pages, reopen_client, store_location)

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 1.0  # how often a long-lived reader asks the store whether an ingest changed it


class LiveCollection:
    """Client, collection, vector store and keyword index (with `retriever.hybrid`) of one collection;
    `follow()` reopens them when an ingest elsewhere re-created the collection or stamped a new version,
    and reloads the scope `gate` when its filter file changed."""

    def __init__(self, config: Config, embeddings: Embedder, client: StoreClient, collection: ChunkCollection,
                 gate: ScopeGate | None = None) -> None:
        self.config, self.embeddings, self.gate = config, embeddings, gate
        self.client, self.collection = client, collection
        self.vectorstore: VectorStore = open_vectorstore(config, embeddings, client)
        self.bm25: KeywordIndex | None = _keyword_index(config, collection)
        self._seen: tuple | None = None  # (collection id, version stamp, filter file mtime)
        self._checked_at = 0.0
        self._source_cache: tuple[int, set[str]] | None = None

    @classmethod
    def open(cls, config: Config, embeddings: Embedder, gate: ScopeGate | None = None) -> "LiveCollection":
        """The configured collection, checked to be made by this embedding model and encoder; a missing or
        empty one is a `StoreError` saying to run the ingest first."""
        client = open_client(config)
        collection = get_collection(client, config.store.collection)
        if collection is None or collection.count() == 0:
            raise StoreError(f"store.collection: no documents in collection {config.store.collection!r} at "
                             f"{store_location(config)}; run `rag-bot ingest DIR` first")
        check_model(collection, config.embedding.model, what="query")
        check_encoder(collection, embeddings, config.chunking.context_header, what="query")
        live = cls(config, embeddings, client, collection, gate)
        live.follow()  # what it opened is what it has seen
        return live

    def follow(self) -> None:
        """Keep in step with ingests run elsewhere: when the collection was re-created (`--rebuild`) or an
        ingest stamped a new version, reopen it and its BM25 index; when the scope filter file changed, reload
        it. Asks the store at most once per `FOLLOW_SECONDS`. A collection that is missing or being rebuilt is
        a `StoreError` that says to try again in a moment."""
        now = time.monotonic()
        if now - self._checked_at < FOLLOW_SECONDS:
            return
        name = self.config.store.collection
        current = get_collection(self.client, name)
        if current is None:
            raise being_rebuilt(name)
        metadata = current.metadata or {}
        seen = (str(current.id), metadata.get(META_VERSION), _mtime(filter_path(self.config)))
        if self._seen is not None and seen[:2] != self._seen[:2]:
            if metadata.get(META_VERSION) is None and metadata.get(META_LEASE):
                raise being_rebuilt(name)  # a new collection that its first ingest has not finished
            log.info("collection %r changed: reopening it", name)
            self._reopen()
        if self._seen is not None and seen[2] != self._seen[2] and self.gate is not None:
            log.info("scope filter changed: reloading it")
            self.gate.reload()
        self._seen = seen
        self._checked_at = now

    def recheck(self) -> None:
        """Make the next `follow()` look at the store again."""
        self._checked_at = 0.0

    @contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Chroma's "collection does not exist" during a query (a rebuild started just now) becomes the
        `StoreError` of `being_rebuilt`, and the next query looks at the store again."""
        try:
            yield
        except Exception as exc:
            if type(exc).__name__ != "NotFoundError":
                raise
            self.recheck()
            raise being_rebuilt(self.config.store.collection) from exc

    def sources(self) -> set[str]:
        """Every `source` in the collection, cached until the chunk count changes."""
        collection = self.collection
        count = collection.count()
        if self._source_cache is None or self._source_cache[0] != count:
            sources = {(m or {}).get("source", "") for page in pages(collection, ["metadatas"]) for m in page["metadatas"]}
            self._source_cache = (count, sources)
        return self._source_cache[1]

    def _reopen(self) -> None:
        client = reopen_client(self.config)
        collection = get_collection(client, self.config.store.collection)
        if collection is None:
            raise being_rebuilt(self.config.store.collection)
        check_model(collection, self.config.embedding.model, what="query")
        check_encoder(collection, self.embeddings, self.config.chunking.context_header, what="query")
        self.client, self.collection = client, collection
        self.vectorstore = open_vectorstore(self.config, self.embeddings, client)
        if self.bm25 is not None:
            self.bm25 = _keyword_index(self.config, collection)
        self._source_cache = None


def being_rebuilt(name: str) -> StoreError:
    return StoreError(f"store.collection: {name!r} is being rebuilt (or was deleted); try again in a moment, "
                      f"or run `rag-bot ingest DIR` if nothing is running")


def _keyword_index(config: Config, collection: ChunkCollection) -> KeywordIndex | None:
    if not config.retriever.hybrid:
        return None
    from .bm25 import load_bm25

    return load_bm25(config, collection)


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None

"""The Chroma store: a persistent folder under `data_dir`, or a Chroma server (`store.mode: http`).

The collection records which embedding model (and dimension) wrote its vectors, so that a query or
an ingest with another model is refused instead of silently mixing vector spaces.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, cast

from .config import Config
from .errors import StoreError

if TYPE_CHECKING:
    from langchain_chroma import Chroma
    from langchain_core.embeddings import Embeddings

    from .protocols import Embedder

log = logging.getLogger(__name__)
# Chroma's local clients share one system per folder, made on first use: two threads opening the same
# folder at once (the API's listing beside a question) can break it, so opening is one at a time.
_OPENING = threading.Lock()

FILES_SUFFIX = ".rag_bot_files"  # the ingest record's companion collection: `<collection>.rag_bot_files`
META_MODEL = "rag_bot.embedding_model"
META_DIMENSION = "rag_bot.embedding_dimension"
META_FOLDER = "rag_bot.folder"  # the folder the collection mirrors
META_RECIPE = "rag_bot.chunking"  # how its chunks were cut: "size N, overlap M"
META_LEASE = "rag_bot.ingest_lease"  # the running ingest: "token expires-epoch holder", or ""
META_VERSION = "rag_bot.version"  # changed by every ingest that changed the collection
META_ENCODER = "rag_bot.encoder"  # what made the vectors: "torch bfloat16", "onnx int8", ... (LocalEmbeddings.encoder)
MIX_MIN_COSINE = 0.995  # another encoder's vectors may join a collection when they agree this closely
META_UNPUBLISHED = "rag_bot.unpublished"  # "1" from an ingest's first change until its new version is stamped
# Before the ingest record moved into the store: the id and host:path of the local record that kept it.
LEGACY_OWNER, LEGACY_OWNER_AT = "rag_bot.record", "rag_bot.record_at"


def store_location(config: Config) -> str:
    """Where the vectors live, for messages and stats: a folder or an http address."""
    if config.store.mode == "http":
        return f"http://{config.store.host}:{config.store.port}"
    return str(store_path(config))


def store_key(config: Config) -> str:
    """A short stable name for this store and collection, used to keep local records apart."""
    digest = hashlib.sha256(store_location(config).encode()).hexdigest()[:10]
    return f"{config.store.collection}-{config.store.mode}-{digest}"


def open_client(config: Config) -> Any:
    """Connect to Chroma as configured; a server that does not answer is a one-line `StoreError`."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if config.store.mode == "persistent":
        path = store_path(config)
        path.mkdir(parents=True, exist_ok=True)
        with _OPENING:
            return chromadb.PersistentClient(path=str(path), settings=settings)
    try:
        client = chromadb.HttpClient(host=config.store.host, port=config.store.port, settings=settings)
        client.heartbeat()
    except Exception as exc:
        raise StoreError(
            f"store.host/store.port: no Chroma server answers at {store_location(config)} ({type(exc).__name__}); "
            f"start one with `chroma run --path DIR --host {config.store.host} --port {config.store.port}` "
            f"or set store.mode: persistent"
        ) from exc
    return client


def reopen_client(config: Config) -> Any:
    """A client that reads the store afresh. Chroma's local client keeps a collection's vector index
    in memory as first loaded and never sees chunks another process (an ingest) wrote later; dropping
    its cached system for this folder makes the next client load the store again (handles already
    given out then use the new one). A server needs nothing of the kind."""
    if config.store.mode == "persistent":
        from chromadb.api.shared_system_client import SharedSystemClient

        key = str(store_path(config))
        with _OPENING:
            SharedSystemClient._identifier_to_system.pop(key, None)
            SharedSystemClient._identifier_to_refcount.pop(key, None)
    return open_client(config)


@contextmanager
def server_errors(config: Config, doing: str) -> Iterator[None]:
    """A Chroma server that stops answering in the middle of some work becomes a one-line
    `StoreError` naming `store.host:port`, like one that does not answer at start-up."""
    try:
        yield
    except StoreError:
        raise  # already says what to do (a server that is down at start-up)
    except Exception as exc:
        if config.store.mode != "http" or not _is_connection_error(exc):
            raise
        raise StoreError(
            f"store.host/store.port: the Chroma server at {store_location(config)} stopped answering during "
            f"{doing} ({type(exc).__name__}); start it again and re-run: finished work is kept"
        ) from exc


def _is_connection_error(exc: BaseException | None) -> bool:
    import httpx

    for _ in range(10):  # the cause chain, not forever
        if exc is None:
            return False
        if isinstance(exc, (httpx.TransportError, ConnectionError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def store_exists(config: Config) -> bool:
    """Whether a persistent store folder is there (never creates it); http stores always count."""
    return config.store.mode == "http" or (store_path(config) / "chroma.sqlite3").exists()


def store_path(config: Config) -> Path:
    """The persistent store's folder (`store.path`, by default `<data_dir>/chroma`)."""
    return config.store.path or config.data_dir / "chroma"


def get_collection(client: Any, name: str) -> Any | None:
    """The collection, or None when it does not exist (never creates it)."""
    try:
        return client.get_collection(name)
    except Exception:  # chromadb raises NotFoundError (a ValueError subclass in some versions)
        return None


def collection_names(config: Config) -> list[str]:
    """The store's rag-bot collections (those with a recorded embedding model), sorted; creates nothing."""
    if not store_exists(config):
        return []
    with server_errors(config, "listing the collections"):
        found = open_client(config).list_collections()
    return sorted(item.name for item in found
                  if not item.name.endswith(FILES_SUFFIX) and META_MODEL in (item.metadata or {}))


def context_header(metadata: dict[str, Any]) -> str:
    """"Title > heading path" of a chunk (its `title` and `heading` metadata), or '' without a title."""
    title = str(metadata.get("title") or "").strip()
    heading = str(metadata.get("heading") or "").strip()
    if not title:
        return heading
    if not heading or heading == title or heading.startswith(title + " > "):
        return heading or title
    return f"{title} > {heading}"


def contextual_text(text: str, metadata: dict[str, Any]) -> str:
    """What is embedded and keyword-indexed for a chunk with `chunking.context_header` on."""
    header = context_header(metadata)
    return f"{header}\n\n{text}" if header else text


@functools.cache
def _contextual_chroma() -> type:
    from langchain_chroma import Chroma

    class ContextualChroma(Chroma):
        """`Chroma` that embeds each chunk with its document's title and heading path in front; the
        stored (and shown) text stays the chunk itself."""

        def add_texts(self, texts: Any, metadatas: list[dict] | None = None, ids: list[str] | None = None,
                      **kwargs: Any) -> list[str]:
            texts = list(texts)
            metadatas = metadatas or [{} for _ in texts]
            ids = ids or [str(uuid.uuid4()) for _ in texts]
            embedder = cast("Embeddings", self._embedding_function)  # always given (open_vectorstore)
            vectors = embedder.embed_documents([contextual_text(text, metadata) for text, metadata in zip(texts, metadatas)])
            self._collection.upsert(ids=ids, embeddings=cast(Any, vectors), metadatas=cast(Any, metadatas), documents=texts)
            return ids

    return ContextualChroma


def open_vectorstore(config: Config, embeddings: "Embedder", client: Any | None = None) -> "Chroma":
    """The LangChain `Chroma` vector store over the configured collection, created if missing.

    Our embedding function is always passed, so Chroma never downloads its own default model.
    With `chunking.context_header` on, chunks are embedded with their title and heading path.
    """
    from langchain_chroma import Chroma

    kind = _contextual_chroma() if config.chunking.context_header else Chroma
    return kind(
        client=client if client is not None else open_client(config),
        collection_name=config.store.collection,
        embedding_function=cast("Embeddings", embeddings),  # LocalEmbeddings, or a test's fake of that shape
        collection_metadata={META_MODEL: config.embedding.model},
        collection_configuration={"hnsw": {"space": "cosine"}},
    )


def recorded_model(collection: Any) -> tuple[str | None, int | None]:
    """(model, dimension) recorded on the collection, each None when unknown."""
    metadata = collection.metadata or {}
    dimension = metadata.get(META_DIMENSION)
    return metadata.get(META_MODEL), int(dimension) if dimension is not None else None


def check_model(collection: Any, model: str, what: str = "ingest") -> None:
    """Refuse to mix vectors of two embedding models in one collection."""
    recorded, _ = recorded_model(collection)
    if recorded is None and collection.count() == 0:
        return
    if recorded != model:
        raise StoreError(
            f"embedding.model: collection {collection.name!r} was built with {recorded or 'an unknown model'!r}, "
            f"but the config says {model!r}; to {what} with the new model, re-run ingest with --rebuild "
            f"(re-embeds everything), or set store.collection to another name"
        )


def record_model(collection: Any, model: str, dimension: int, encoder: str | None = None) -> None:
    """Write the model, dimension and encoder into the collection's metadata (kept with other keys)."""
    update_metadata(collection, {META_MODEL: model, META_DIMENSION: dimension, **({META_ENCODER: encoder} if encoder else {})})


def check_encoder(collection: Any, embeddings: Any, context_header: bool, what: str = "ingest") -> None:
    """Refuse to mix vectors of the same model made by another encoder (torch or ONNX; float32,
    bfloat16 or int8) when they differ: when the recorded encoder is not this one, a few stored chunks
    are embedded again and compared with their stored vectors (cosine at least `MIX_MIN_COSINE`)."""
    recorded = fresh_metadata(collection).get(META_ENCODER)
    current = getattr(embeddings, "encoder", None) if recorded else None
    if not recorded or current is None or recorded == current:
        return
    got = collection.get(limit=8, include=["documents", "metadatas", "embeddings"])
    if not got["ids"]:
        return
    import numpy as np

    texts = [contextual_text(text, meta or {}) if context_header else text
             for text, meta in zip(got["documents"], got["metadatas"])]
    stored = np.asarray(got["embeddings"], dtype=np.float64)
    fresh = np.asarray(embeddings.embed_documents(texts), dtype=np.float64)
    cosine = np.sum(stored * fresh, axis=1) / np.clip(
        np.linalg.norm(stored, axis=1) * np.linalg.norm(fresh, axis=1), 1e-12, None)
    worst = float(cosine.min())
    if worst < MIX_MIN_COSINE:
        raise StoreError(
            f"embedding.backend: collection {collection.name!r} was embedded by {recorded}, this config runs "
            f"{current}, and their vectors differ (cosine {worst:.4f} < {MIX_MIN_COSINE}); to {what} with {current}, "
            f"re-run ingest with --rebuild, or set embedding.backend / embedding.quantize back")
    log.info("collection %r was embedded by %s; %s agrees with it (cosine %.4f): mixing is safe",
             collection.name, recorded, current, worst)


def fresh_metadata(collection: Any) -> dict[str, Any]:
    """The collection's metadata as the store has it now (another process may have changed it)."""
    try:
        collection = collection._client.get_collection(collection.name)
    except Exception:  # gone (a rebuild elsewhere): what this handle last knew
        pass
    return dict(collection.metadata or {})


def update_metadata(collection: Any, values: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    """Set some keys of the collection's metadata (and remove the `drop` keys), keeping the others
    as the store has them now."""
    current = fresh_metadata(collection)
    if all(current.get(key) == value for key, value in values.items()) and not set(drop) & set(current):
        return
    metadata = {k: v for k, v in current.items() if not k.startswith("hnsw:") and k not in drop}
    metadata.update(values)
    collection.modify(metadata=metadata)


def pages(collection: Any, include: list[str], size: int = 5000) -> Any:
    """Everything in the collection, a page at a time (`collection.get` results)."""
    offset = 0
    while True:
        got = collection.get(include=include, limit=size, offset=offset)
        yield got
        if len(got["ids"]) < size:
            return
        offset += size


@dataclass(frozen=True)
class StoredChunk:
    """One chunk as the store keeps it."""

    id: str
    text: str
    metadata: dict[str, Any]


def sample_chunks(collection: Any, limit: int, seed: int = 0, min_words: int = 0) -> list[StoredChunk]:
    """Up to `limit` chunks drawn at random from the whole collection (the same ones for the same
    seed), leaving out those shorter than `min_words` words."""
    ids = [chunk_id for page in pages(collection, []) for chunk_id in page["ids"]]
    order = random.Random(seed).sample(ids, len(ids) if min_words else min(limit, len(ids)))
    chosen: list[StoredChunk] = []
    for start in range(0, len(order), 500):
        got = collection.get(ids=order[start:start + 500], include=["documents", "metadatas"])
        chunks = (StoredChunk(i, text or "", meta or {}) for i, text, meta in zip(got["ids"], got["documents"], got["metadatas"]))
        chosen += [chunk for chunk in chunks if len(chunk.text.split()) >= min_words]  # in the store's order
        if len(chosen) >= limit:
            break
    return chosen[:limit]


def nearest_chunks(collection: Any, vectors: Any, n: int, batch: int = 64) -> tuple[list[list[float]], list[list[dict]], list[list[str]]]:
    """For each vector: cosine similarities of its `n` nearest chunks (best first), their metadata
    and ids, in batched queries. Shorter lists are padded with similarity 0 (a tiny collection)."""
    similarities: list[list[float]] = []
    metadatas: list[list[dict]] = []
    ids: list[list[str]] = []
    rows = [list(map(float, v)) for v in vectors]
    n = max(1, min(n, collection.count()))
    for start in range(0, len(rows), batch):
        got = collection.query(query_embeddings=rows[start:start + batch], n_results=n,
                               include=["distances", "metadatas"])
        for distances, metas, found in zip(got["distances"], got["metadatas"], got["ids"]):
            sims = [1.0 - float(d) for d in distances]  # the collection uses cosine distance
            similarities.append(sims + [0.0] * (n - len(sims)))
            metadatas.append([m or {} for m in metas])
            ids.append(list(found))
    return similarities, metadatas, ids

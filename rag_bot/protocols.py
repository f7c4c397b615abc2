"""The types handed from one module to another (the seams), so that a reader, an IDE and mypy can
follow a question from the UI through the chain and the retriever to the store.

Classes satisfy them by shape: `models.LocalEmbeddings` and LangChain's fake embeddings are an
`Embedder`; sentence-transformers' `CrossEncoder` is a `CrossEncoderModel`; `bm25.Bm25Index` is a
`KeywordIndex`.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence


class Embedder(Protocol):
    """The bi-encoder as the retriever, the scope gate and the evidence finder use it."""

    def embed_query(self, text: str) -> list[float]: ...

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def encode(self, texts: list[str], batch_size: int | None = None) -> Any:
        """Unit-length vectors as the rows of a numpy array."""
        ...


class CrossEncoderModel(Protocol):
    """A cross-encoder: one relevance score per (query, passage) pair."""

    def predict(self, sentences: Sequence[tuple[str, str]], batch_size: int = ..., show_progress_bar: bool | None = ...,
                **kwargs: Any) -> Any: ...


class AnswerJudgeModel(Protocol):
    """What the chain needs from the answer judge (`judge.AnswerJudge`)."""

    def margin(self, question: str, text: str) -> float: ...

    def score(self, chat: list[dict[str, str]]) -> float: ...

    def preload(self) -> None: ...


class KeywordIndex(Protocol):
    """The BM25 index over the collection's chunks: the best `k` (chunk id, score) for a query, and
    whether any chunk holds every word of a term."""

    def search(self, query: str, k: int) -> list[tuple[str, float]]: ...

    def mentions(self, term: str) -> bool: ...

    def mentions_word(self, term: str) -> bool | None: ...

    def holds_words(self, text: str) -> bool: ...

    def idf(self, token: str) -> float: ...


class ChunkCollection(Protocol):
    """A chromadb collection, as read here: its identity and metadata, counts, gets and queries."""

    @property
    def id(self) -> Any: ...

    @property
    def name(self) -> str: ...

    @property
    def metadata(self) -> Any: ...

    def count(self) -> int: ...

    def get(self, ids: Any = None, where: Any = None, limit: int | None = None, offset: int | None = None,
            where_document: Any = None, include: Any = ...) -> Any: ...

    def query(self, query_embeddings: Any = None, query_texts: Any = None, query_images: Any = None,
              query_uris: Any = None, ids: Any = None, n_results: int = 10, where: Any = None,
              where_document: Any = None, include: Any = ...) -> Any: ...


class StoreClient(Protocol):
    """A chromadb client (local or HTTP), as used to find a collection again."""

    def get_collection(self, name: str, *args: Any, **kwargs: Any) -> Any: ...


class DocumentShelf(Protocol):
    """The collection's documents as the chat's Documents tab manages them (`ingest.library.Library`)."""

    def folder(self) -> Any: ...

    def rows(self) -> list[dict[str, Any]]: ...

    def text(self, source: str) -> str: ...

    def view(self, source: str, page: int | None, snippet: str) -> Any: ...

    def add(self, uploads: list[Any], progress: bool = False) -> str: ...

    def remove(self, sources: list[str], progress: bool = False) -> str: ...

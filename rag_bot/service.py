"""The chains over every collection of one store, for the edges that serve many people at once (the
HTTP API, the chat UI): one embedder, one cross-encoder, one LLM and one answer judge loaded once and
shared by all collections, and one worker thread through which every question reaches them, in turn.

    from rag_bot.service import Collections
    service = Collections(load_config("config.yaml"))
    answer = service.run(lambda: service.chain("rag_bot").invoke("how do I ingest a folder?"))
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from .config import Config
from .errors import RagBotError
from .models import LocalEmbeddings
from .store import collection_names

if TYPE_CHECKING:
    from .chain import RagChain
    from .llm import ChatLLM
    from .protocols import AnswerJudgeModel
    from .retriever import RagRetriever

log = logging.getLogger(__name__)
T = TypeVar("T")


class Busy(RagBotError):
    """More questions are waiting than the queue holds (`api.max_queue`); ask again shortly."""


class Collections:
    """Chains over the store's collections, built on first use and kept; models shared and loaded once.

    `run(work)` runs `work` on the single worker thread (the models and the LLM are not used by two
    threads at once) and returns a `Future`; at most `max_queue` pieces of work wait, more raise `Busy`.
    """

    def __init__(self, config: Config, *, llm: ChatLLM | None = None, max_queue: int = 64,
                 embeddings: LocalEmbeddings | None = None) -> None:
        self.config = config
        self.max_queue = max_queue
        self._llm = llm
        # loads on first use; shared with ingest jobs (the App passes its own)
        self.embeddings = embeddings if embeddings is not None else LocalEmbeddings(config.embedding)
        self._reranker: tuple[Any, str] | None = None  # the cross-encoder and its status line
        self._judge: tuple[AnswerJudgeModel | None] | None = None  # built with the first chain
        self._chains: dict[str, RagChain] = {}
        self._lock = threading.Lock()
        self._waiting = 0
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-bot-worker")

    @property
    def default(self) -> str:
        return self.config.store.collection

    def names(self) -> list[str]:
        """The collections that can be asked (the configured one first, if it holds documents)."""
        names = collection_names(self.config)
        return sorted(names, key=lambda name: (name != self.default, name))

    def retriever(self, name: str | None = None) -> RagRetriever:
        return self.chain(name).retriever

    def chain(self, name: str | None = None) -> RagChain:
        """The chain over collection `name` (default: `store.collection`); built once."""
        from .chain import load_chain, load_judge
        from .llm import load_llm
        from .retriever import load_retriever

        name = name or self.default
        with self._lock:
            if name not in self._chains:
                config = self.config.for_collection(name)
                reranker, status = self._shared_reranker()
                retriever = load_retriever(config, embeddings=self.embeddings, reranker=reranker,
                                           reranker_status=status)
                self._llm = self._llm or load_llm(config)
                if self._judge is None:
                    self._judge = (load_judge(config, self._llm),)
                self._chains[name] = load_chain(config, retriever=retriever, llm=self._llm, judge=self._judge[0])
            return self._chains[name]

    def _shared_reranker(self) -> tuple[Any, str]:
        if self._reranker is None:
            from .models import open_reranker

            off = (None, "off (reranker.enabled: false)")
            self._reranker = off if self.config.reranker.enabled is False else open_reranker(self.config.reranker)
        return self._reranker

    def warm_up(self) -> None:
        """Build the default collection's chain and load the LLM on the worker, before the first question."""

        def prepare() -> None:
            try:
                self.chain().llm.preload()
            except Exception as exc:  # reported again, readably, to whoever asks
                log.warning("could not prepare collection %r yet: %s", self.default, exc)

        self.run(prepare)

    def run(self, work: Callable[[], T]) -> Future[T]:
        """`work()` on the worker thread, after the work already waiting; `Busy` when the queue is full."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise Busy(f"api.max_queue: {self._waiting} questions are already waiting; ask again shortly")
            self._waiting += 1

        def counted() -> T:
            try:
                return work()
            finally:
                with self._lock:
                    self._waiting -= 1

        return self._worker.submit(counted)

    def close(self) -> None:
        """Stop taking work; the work already queued finishes first."""
        self._worker.shutdown(wait=True)

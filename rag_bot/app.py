"""The application: the one module, besides the command line, that joins the ingest job and the runtime.
It owns the shared models (through `Collections`: one embedder, cross-encoder, LLM and judge for every
collection, and the one worker that questions reach them through) and the jobs that need both sides: an
ingest or a watch followed by the scope filter's refresh, and the Documents shelf of each collection.
The edges (`rag-bot` commands, the chat UI, the HTTP API, MCP) are thin layers over it.

    app = App(load_config())
    done = app.ingest("docs")                 # the report, and the scope filter retrained when it has to be
    print(done.summary())
    answer = app.service.chain("notes").invoke("Who planted the orchard?")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .config import Config
from .errors import RagBotError
from .models import LocalEmbeddings
from .prompting import load_prompts, prompts_dir
from .service import Collections

if TYPE_CHECKING:
    from ingest.library import Library
    from ingest.pipeline import IngestReport


@dataclass
class Ingested:
    """One ingest run and what it did to the scope filter (None: nothing)."""

    report: IngestReport
    filter: dict | None = None

    @property
    def changed(self) -> bool:
        return bool(self.report.added or self.report.updated or self.report.deleted)

    def to_json(self) -> dict[str, Any]:
        return {**self.report.to_json(), **({"filter": self.filter} if self.filter else {})}

    def summary(self) -> str:
        return self.report.summary() + (f"\n{self.filter['message']}" if self.filter else "")


class App:
    """The configured store with its models and jobs. Models load on first use (`warm_up()` loads them
    now); `close()` stops the answer worker."""

    def __init__(self, config: Config, *, max_queue: int = 64, embeddings: Any = None) -> None:
        self.config = config
        # loads on first use; shared by every job and collection (or the embedder passed in)
        self.embeddings = embeddings if embeddings is not None else LocalEmbeddings(config.embedding)
        self.max_queue = max_queue
        self._service: Collections | None = None
        self._shelves: dict[str, Library] = {}

    @property
    def service(self) -> Collections:
        """The chains over the store's collections, sharing the app's models (made on first use)."""
        if self._service is None:
            self._service = Collections(self.config, max_queue=self.max_queue, embeddings=self.embeddings)
        return self._service

    def check_prompts(self) -> None:
        """Stop now on a broken prompt template, not at the first question."""
        load_prompts(prompts_dir(self.config))

    def ingest(self, folder: str | Path, *, dry_run: bool = False, rebuild: bool = False,
               progress: bool | None = None) -> Ingested:
        """Bring the collection in line with `folder`, then refresh the scope filter (retrained after the
        embedding model changed; see `filter_training.refresh_filter`)."""
        from ingest.pipeline import run_ingest

        report = run_ingest(self.config, folder, dry_run=dry_run, rebuild=rebuild, progress=progress,
                            embeddings=self.embeddings)
        return Ingested(report, None if dry_run else self._refresh_filter(self.config))

    def watch(self, folder: str | Path, *, on_run: Callable[[Ingested], None],
              on_error: Callable[[RagBotError], None], rebuild: bool = False) -> None:
        """`ingest` now and after every burst of changes to `folder` until Ctrl+C; a run that changed the
        documents also retrains a filter trained from them."""
        from ingest.watch import watch_folder

        def report(done: IngestReport) -> None:
            run = Ingested(done)
            run.filter = self._refresh_filter(self.config, corpus_changed=run.changed)
            on_run(run)

        watch_folder(self.config, folder, embeddings=self.embeddings, on_report=report, on_error=on_error,
                     rebuild=rebuild)

    def documents(self, name: str | None = None) -> Library:
        """The Documents shelf of collection `name` (the configured one by default): uploads and deletes
        ingest at once, with the app's embedding model, and retrain a filter trained from the corpus."""
        from ingest.library import Library

        chosen = self.config.for_collection(name)
        if chosen.store.collection not in self._shelves:
            def retrained(report: Any) -> str | None:
                scope = self._refresh_filter(chosen, corpus_changed=True)
                return scope["message"] if scope else None

            self._shelves[chosen.store.collection] = Library(chosen, self.embeddings, after_change=retrained)
        return self._shelves[chosen.store.collection]

    def warm_up(self) -> None:
        """Load in the background what the first question needs."""
        self.service.warm_up()

    def close(self) -> None:
        if self._service is not None:
            self._service.close()

    def _refresh_filter(self, config: Config, corpus_changed: bool = False) -> dict | None:
        from .filter_training import refresh_filter

        return refresh_filter(config, self.embeddings, corpus_changed=corpus_changed)

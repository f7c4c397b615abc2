"""`rag-bot ingest DIR --watch`: keep the collection mirroring the folder. One ingest now, then one
after each burst of changes (debounced: a copy of many files is one run), never two at once, each
with the crash safety of a plain ingest. Changes made during a run start the next one.

A chat or API running beside it sees the changes without a restart: each ingest that changes the
collection stamps a new version on it, which the retriever follows."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

from rag_bot.config import Config
from rag_bot.errors import RagBotError, UsageError

from .pipeline import IngestReport, run_ingest

log = logging.getLogger(__name__)

DEBOUNCE_MS = 1000  # quiet time after the last change before a run starts
LONGEST_BURST_MS = 30_000  # changes that never pause: a run starts after this long all the same
FIRST_RUN_AFTER_MS = 300  # the watcher runs this long before the first ingest


def watch_folder(config: Config, folder: str | Path, *, embeddings: Any,
                 on_report: Callable[[IngestReport], None], on_error: Callable[[RagBotError], None],
                 stop: threading.Event | None = None, debounce_ms: int = DEBOUNCE_MS, rebuild: bool = False) -> None:
    """Ingest `folder` now and after every burst of changes until `stop` is set (or Ctrl+C).

    Each run's report goes to `on_report`; a run that fails as a whole (a store that stopped
    answering, another ingest holding the collection) goes to `on_error` and the watch goes on:
    the next change, or the next burst, tries again. `rebuild` applies to the first run only."""
    from watchfiles import DefaultFilter, watch

    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"{folder}: not a folder; give the folder of documents to watch")
    # the data folder may sit inside the watched one: its writes are not changes to the documents
    changes = DefaultFilter(ignore_paths=[str(config.data_dir.resolve())])

    def once(rebuild: bool = False) -> None:
        try:
            on_report(run_ingest(config, root, rebuild=rebuild, progress=False, embeddings=embeddings))
        except RagBotError as exc:
            on_error(exc)

    # The first run starts once the watcher is live (its first, empty yield after `rust_timeout`), so
    # a change made while it runs, or just after it reported, comes in the next batch, never lost.
    started = False
    # watchfiles' `step` is the quiet time that ends a burst (its `debounce` is only the longest burst)
    for batch in watch(root, watch_filter=changes, step=debounce_ms, debounce=max(LONGEST_BURST_MS, 2 * debounce_ms),
                       stop_event=stop, raise_interrupt=False, yield_on_timeout=True, rust_timeout=FIRST_RUN_AFTER_MS):
        if started and not batch:
            continue  # a quiet spell
        log.info("%d changes in %s", len(batch), root)
        try:
            once(rebuild and not started)
        except KeyboardInterrupt:  # Ctrl+C is how a watch stops, also in the middle of a run
            log.warning("stopped during a run; the next ingest of %s finishes it", root)
            return
        started = True
        if stop is not None and stop.is_set():
            break

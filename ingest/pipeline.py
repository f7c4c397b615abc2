"""The ingest job: folder -> discover -> load -> split -> index, with a report of what changed."""

from __future__ import annotations

import ctypes
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from rag_bot.config import Config
from rag_bot.errors import InputError, UsageError
from rag_bot.models import LocalEmbeddings
from rag_bot.names import shown
from rag_bot.store import server_errors, store_location

from . import loaders
from .discover import Candidate, Skip, discover
from .index import Change, IngestIndex, check_without_writing, make_plan, read_files
from .record import FileRow
from .split import Splitter, document_title

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What one run did. `exit_code` is 1 when a file was skipped because of an error, else 0."""

    folder: str
    location: str
    collection: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    ignored: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    chunks_total: int = 0
    seconds: float = 0.0
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        return 1 if any(skip.error for skip in self.skipped) else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "files": {
                "added": len(self.added),
                "updated": len(self.updated),
                "deleted": len(self.deleted),
                "unchanged": len(self.unchanged),
                "skipped": len(self.skipped),
            },
            "chunks": {"written": self.chunks_written, "deleted": self.chunks_deleted, "total": self.chunks_total},
            "skipped": [{"path": s.source, "reason": s.reason, "error": s.error} for s in self.skipped],
            "ignored": self.ignored,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        verb = "Would ingest" if self.dry_run else "Ingested"
        would = " (dry run: nothing written)" if self.dry_run else ""
        lines = [
            f"{verb} {self.folder} into collection {self.collection!r} at {self.location}{would}",
            f"files:  {len(self.added)} added, {len(self.updated)} updated, {len(self.deleted)} deleted, "
            f"{len(self.unchanged)} unchanged, {len(self.skipped)} skipped"
            + (f" ({self.ignored} of unsupported types ignored)" if self.ignored else ""),
            f"chunks: {'at most ' if self.dry_run else ''}{self.chunks_written} written, "
            f"{self.chunks_deleted} deleted, {self.chunks_total} in the collection{' now' if self.dry_run else ''}",
        ]
        errors = sum(skip.error for skip in self.skipped)
        if self.skipped:
            lines.append(f"skipped: {errors} with errors, {len(self.skipped) - errors} by policy (listed above)")
        lines.append(f"time:   {self.seconds:.1f} s")
        return "\n".join(lines)


def run_ingest(
    config: Config,
    folder: str | Path,
    *,
    dry_run: bool = False,
    rebuild: bool = False,
    progress: bool | None = None,
    embeddings: Any = None,
) -> IngestReport:
    """Bring the collection in line with `folder`. Bad files are skipped and reported, never fatal.

    `progress=None` shows a progress bar only on a terminal. `embeddings` defaults to the
    configured `LocalEmbeddings` (loaded only if something must be embedded).
    """
    started = time.perf_counter()
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise UsageError(f"{folder}: not a folder; give the folder of documents to ingest")
    found = discover(root, config.ingest, loaders.extensions(config.ingest.ocr != "off"))
    for skip in found.skipped:
        _log_skip(skip)
    report = IngestReport(str(folder), store_location(config), config.store.collection,
                          skipped=list(found.skipped), ignored=found.ignored, dry_run=dry_run)
    embeddings = embeddings if embeddings is not None else LocalEmbeddings(config.embedding)
    keep = {skip.source for skip in found.skipped}
    if dry_run:
        _dry_run(config, root, found.files, keep, rebuild, embeddings, report)
    else:
        _sync(config, root, found.files, keep, rebuild, embeddings, report, progress)
    report.seconds = time.perf_counter() - started
    return report


def _dry_run(config: Config, root: Path, files: list[Candidate], keep: set[str], rebuild: bool, embeddings: Any,
             report: IngestReport) -> None:
    """What a run would change, from the stored files table, writing nothing (nothing is embedded)."""
    if not rebuild:
        check_without_writing(config, root)
    known = {} if rebuild else read_files(config)
    plan = make_plan(known, files, keep)
    _fill_plan(report, plan)
    report.chunks_deleted = sum(known[source].chunks for source in plan.deleted)
    report.chunks_total = sum(row.chunks for row in known.values())
    if plan.changed:  # split without embedding: how many chunks at most would be written
        splitter = Splitter(embeddings.token_offsets, config.chunking.size, config.chunking.overlap,
                            config.chunking.context_header)
        report.chunks_written = sum(len(chunks) for chunks, _ in _split_all(plan.changed, splitter, report, _max_bytes(config)))


def _sync(config: Config, root: Path, files: list[Candidate], keep: set[str], rebuild: bool, embeddings: Any,
          report: IngestReport, progress: bool | None) -> None:
    """The run itself: refuse another owner, then delete, index and publish, holding the store's lease."""
    with server_errors(config, "the ingest"), IngestIndex(config, embeddings, rebuild=rebuild) as index:
        index.check(root)
        plan = index.plan(files, keep)
        _fill_plan(report, plan)
        index.save_files(plan.touched)
        if plan.changed or plan.deleted:
            index.mark_changing()
        report.chunks_deleted = index.delete_sources(plan.deleted)
        _index_changes(index, plan.changed, embeddings, config, report, progress)
        _return_free_memory()  # what the model's batches used, before the keyword index is built
        report.chunks_total = index.finish()
        index.publish()


def _return_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc keeps them after a run of large,
    differently sized tensors); nothing happens where there is no glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _fill_plan(report: IngestReport, plan: Any) -> None:
    report.added = [c.candidate.source for c in plan.added]
    report.updated = [c.candidate.source for c in plan.updated]
    report.unchanged = plan.unchanged
    report.deleted = plan.deleted


SORT_WINDOW = 8192  # chunks read ahead and sorted by length before they are embedded


def _index_changes(index: IngestIndex, changes: list[Change], embeddings: Any,
                   config: Config, report: IngestReport, progress: bool | None) -> None:
    """Split the changed files a window at a time and embed and store each window's chunks shortest
    first, so that each batch pads little (as fast as one big `encode` call), then record the files.

    Only one window of chunks (`SORT_WINDOW`) is held at a time, so memory does not grow with the
    size of the folder. All chunks go through one `index()` call whose clean-up of stale chunks runs
    after the last batch (see `IngestIndex.write`), so it does not matter how a file's chunks are
    spread over batches. A crash loses only the unfinished batch: the stored chunks are their own
    record, so the next run embeds only what is missing. The progress bar counts the bytes of the
    files whose chunks have been stored.
    """
    if not changes:
        return
    from tqdm.auto import tqdm

    disable = None if progress is None else not progress
    rows: list[FileRow] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-model") as pool:
        if hasattr(type(embeddings), "model") and not embeddings.loaded:
            pool.submit(lambda: embeddings.model)  # load the model while the first files are read
        splitter = Splitter(embeddings.token_offsets, config.chunking.size, config.chunking.overlap,
                            config.chunking.context_header)
        total = sum(change.candidate.size for change in changes)
        with tqdm(total=total, unit="B", unit_scale=True, desc="ingesting", disable=disable) as bar:
            windows = _sorted_windows(_split_all(changes, splitter, report, _max_bytes(config), config.ingest.ocr != "off"),
                                       rows, bar.update)
            result = index.write((doc for window in windows for doc in window), rows, config.ingest.write_batch)
    report.chunks_written += result["num_added"] + result["num_updated"]
    report.chunks_deleted += result["num_deleted"]


def _sorted_windows(split: Iterator[tuple[list, FileRow]], rows: list[FileRow],
                    step: Callable[[float], Any]) -> Iterator[Iterator[Any]]:
    """Windows of at least `SORT_WINDOW` chunks (whole files), each sorted shortest first; the files
    of a window join `rows` as it is read, and each chunk handed on advances `step` by its share of its
    file's bytes."""
    window: list[tuple[Any, float]] = []
    for chunks, row in split:
        rows.append(row)
        share = row.size / len(chunks) if chunks else 0.0
        window.extend((chunk, share) for chunk in chunks)
        if not chunks:
            step(row.size)
        if len(window) >= SORT_WINDOW:
            yield _counted(window, step)
            window = []
    if window:
        yield _counted(window, step)


def _counted(window: list[tuple[Any, float]], step: Callable[[float], Any]) -> Iterator[Any]:
    window.sort(key=lambda item: len(item[0].page_content))
    for chunk, share in window:
        step(share)
        yield chunk


def _max_bytes(config: Config) -> int:
    return int(config.ingest.max_file_mb * 1024 * 1024)


def _split_all(changes: list[Change], splitter: Splitter, report: IngestReport,
               max_bytes: int | None = None, ocr: bool = True) -> Iterator[tuple[list, FileRow]]:
    """Load and split the changed files one by one into (chunks, file row). A file that fails to load
    is reported and left as it was in the store; `max_bytes` bounds what a file unpacks to; `ocr` reads
    images and PDF pages without text."""
    for change in changes:
        candidate = change.candidate
        try:
            sections = loaders.load(candidate.path, max_bytes, ocr)
            title = document_title(sections, candidate.source) if splitter.context_header else None
            chunks = splitter.split(sections, candidate.source, title)
            check_storable(chunks)
        except InputError as exc:
            _skip(report, change, exc)
            continue
        yield chunks, FileRow(candidate.source, candidate.size, candidate.mtime_ns, change.sha256, len(chunks),
                              time.time(), loaders.reader_version(candidate.source))


def check_storable(chunks: list) -> None:
    """The store takes only valid UTF-8 text and plain values: find out per file, before writing, so
    that one odd file is a skip instead of a failed batch that ends the run."""
    for chunk in chunks:
        for value in [chunk.page_content, *chunk.metadata.values()]:
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise InputError("text that is not valid UTF-8 cannot be stored; re-save the file as UTF-8") from None
            elif value is not None and not isinstance(value, (int, float, bool)):
                raise InputError(f"metadata value of type {type(value).__name__} cannot be stored")


def _skip(report: IngestReport, change: Change, exc: InputError) -> None:
    source = change.candidate.source
    (report.added if change.is_new else report.updated).remove(source)
    skip = Skip(source, exc.reason, exc.error)
    report.skipped.append(skip)
    _log_skip(skip)


def _log_skip(skip: Skip) -> None:
    log.warning("skipped %s: %s", shown(skip.source), skip.reason)

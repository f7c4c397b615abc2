"""A collection's documents as the chat's Documents tab manages them: list them, add uploads
(copied into the folder the collection mirrors, then an incremental ingest), remove files (deleted
from that folder, then the ingest removes their chunks).

Nothing is written outside the folder: an upload keeps only its base name, hidden, control-character
and unsupported names are refused, a link of the same name is never written through, files above
`ingest.max_file_mb` are refused, and a file lands under its final name only when complete."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from rag_bot.config import Config
from rag_bot.errors import InputError, UsageError
from rag_bot.names import BIDI_CONTROLS, disk_name, shown
from rag_bot.store import META_FOLDER, fresh_metadata, get_collection, open_client, pages

from . import loaders
from .index import read_files
from .passage import PassageView, pdf_view, text_view
from .pipeline import IngestReport, run_ingest

log = logging.getLogger(__name__)


# A browser sends a control character of a file name percent-encoded (%0A for a newline): still one.
_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9a-fA-F]|7[fF])")


def safe_name(name: str, ocr: bool = True) -> str:
    """The base name an upload is stored under; `InputError` when none is usable."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if (not base or base in (".", "..") or base.startswith(".") or any(ord(c) < 32 or c == "\x7f" for c in base)
            or _ENCODED_CONTROL.search(base)):
        raise InputError(f"{shown(name)}: not a usable file name (hidden, empty or with control characters); "
                         "rename the file and add it again")
    if BIDI_CONTROLS.search(base):
        raise InputError(f"{shown(BIDI_CONTROLS.sub('?', base))}: the name holds characters that reverse how it "
                         "reads (right-to-left controls); rename the file and add it again")
    if Path(base).suffix.lower() not in loaders.extensions(ocr):
        raise InputError(f"{shown(base)}: rag-bot cannot read {Path(base).suffix or 'files without an extension'}; "
                         f"supported: {', '.join(sorted(loaders.extensions(ocr)))}")
    return base


class Library:
    """The documents of the configured collection and the folder it mirrors.

    `after_change(report)` runs after each ingest that changed something (the CLI retrains a
    corpus-trained scope filter there) and may return a line to show."""

    def __init__(self, config: Config, embeddings: Any,
                 after_change: Callable[[IngestReport], str | None] | None = None) -> None:
        self.config = config
        self.embeddings = embeddings
        self.after_change = after_change
        self._lock = threading.Lock()  # one change at a time from this process (the store's lease covers others)

    def folder(self) -> Path | None:
        """The folder the collection mirrors (recorded by its ingests), or None before the first one."""
        from rag_bot.store import store_exists

        if not store_exists(self.config):
            return None
        collection = get_collection(open_client(self.config), self.config.store.collection)
        recorded = fresh_metadata(collection).get(META_FOLDER) if collection is not None else None
        return Path(recorded) if recorded and Path(recorded).is_dir() else None

    def rows(self) -> list[dict[str, Any]]:
        """One row per ingested file: source, chunks, pages, size, modified and ingested times."""
        files = read_files(self.config)
        counted = self._pages()
        return [{"source": row.source, "chunks": row.chunks, "pages": counted.get(row.source, 0), "size": row.size,
                 "modified": row.mtime_ns / 1e9, "ingested": row.ingested or None}
                for row in sorted(files.values(), key=lambda row: row.source.lower())]

    def text(self, source: str) -> str:
        """The text rag-bot reads from `source`, a file of this collection (PDF pages marked), read from
        the folder the collection mirrors: what an MCP client gets as the document. `InputError` for a
        name the collection does not hold or a file that has gone; nothing outside the folder is read."""
        sections = loaders.load(self._path(source), int(self.config.ingest.max_file_mb * 1024 * 1024),
                                self.config.ingest.ocr != "off", say=log.info)
        parts, page = [], None
        for section in sections:  # a page's mark once, before its first section
            if section.page is not None and section.page != page:
                page = section.page
                parts.append(f"[page {page}]")
            parts.append(section.text.strip())
        return "\n\n".join(parts)

    def view(self, source: str, page: int | None, snippet: str) -> PassageView:
        """A cited passage in its document (see `ingest.passage`): a PDF's page as an image with the
        passage highlighted, else the text around it; the same checks as `text`."""
        path = self._path(source)
        if path.suffix.lower() == ".pdf" and page is not None:
            return pdf_view(source, path, page, snippet)
        return text_view(source, self.text(source), snippet)

    def _path(self, source: str) -> Path:
        """The file of `source` in the folder; `InputError` for a name the collection does not hold, a
        path leading outside the folder, or a file that has gone."""
        folder = self._folder()
        if source not in read_files(self.config):
            raise InputError(f"{shown(source)}: not a file of collection {self.config.store.collection!r}; "
                             "list its documents to see the names")
        path = Path(os.path.normpath(folder / source))
        if not path.exists() and not path.is_symlink():  # a name that is not UTF-8 is stored escaped
            path = Path(os.path.normpath(folder / disk_name(source)))
        if not path.resolve().is_relative_to(folder):
            raise InputError(f"{shown(source)}: leads outside {folder}; not read")
        if not path.is_file():
            raise InputError(f"{shown(source)}: no longer in {folder}; run rag-bot ingest to update the collection")
        return path

    def _pages(self) -> dict[str, int]:
        collection = get_collection(open_client(self.config), self.config.store.collection)
        seen: dict[str, set] = {}
        for page in pages(collection, ["metadatas"]) if collection is not None else []:
            for meta in page["metadatas"]:
                if meta.get("page") is not None:
                    seen.setdefault(str(meta["source"]), set()).add(meta["page"])
        return {source: len(found) for source, found in seen.items()}

    def add(self, uploads: list[Path], progress: bool = False) -> str:
        """Copy `uploads` (each kept under its base name) into the folder, then ingest; the summary."""
        folder = self._folder()
        limit = self.config.ingest.max_file_mb * 1024 * 1024
        refused: list[str] = []
        with self._lock:
            for upload in uploads:
                try:
                    self._copy(Path(upload), folder, limit)
                except InputError as exc:
                    refused.append(str(exc))
            return self._sync(folder, progress, refused, "Not added")

    def _copy(self, upload: Path, folder: Path, limit: float) -> None:
        name = safe_name(upload.name, self.config.ingest.ocr != "off")
        if upload.stat().st_size > limit:
            raise InputError(f"{shown(name)}: {upload.stat().st_size / 1048576:.3g} MB is more than ingest.max_file_mb "
                             f"({self.config.ingest.max_file_mb:g} MB); not added")
        target = folder / name
        self._check_target(name, target, folder)
        # Created exclusively (never through a link already there) under an unpredictable hidden name: an
        # ingest beside it skips it, and nobody can plant a link at it in advance.
        try:
            handle, partial_name = tempfile.mkstemp(dir=folder, prefix=f".{name[:64]}.", suffix=".part")
        except OSError as exc:
            raise InputError(f"{shown(name)}: cannot be written into {folder} ({exc.strerror}); not added") from exc
        partial = Path(partial_name)
        try:
            with os.fdopen(handle, "wb") as out, upload.open("rb") as source:
                os.fchmod(out.fileno(), 0o644)  # as a plain copy would be, not mkstemp's owner-only mode
                shutil.copyfileobj(source, out)
            self._check_target(name, target, folder)  # again: a link may have appeared during the copy
            os.replace(partial, target)  # replaces a name, never writes through one
        finally:
            partial.unlink(missing_ok=True)

    @staticmethod
    def _check_target(name: str, target: Path, folder: Path) -> None:
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise InputError(f"{shown(name)}: the folder has a link or folder of that name; not replaced")
        if target.resolve().parent != folder.resolve():
            raise InputError(f"{shown(name)}: would land outside {folder}; not added")

    def remove(self, sources: list[str], progress: bool = False) -> str:
        """Delete ingested files from the folder, then ingest (their chunks go); the summary."""
        folder = self._folder()
        known = read_files(self.config)
        refused: list[str] = []
        with self._lock:
            for source in sources:
                path = Path(os.path.normpath(folder / source))
                if source not in known or not path.is_relative_to(folder):
                    refused.append(f"{shown(source)}: not a file of this collection; nothing deleted")
                    continue
                if not path.exists() and not path.is_symlink():  # a name that is not UTF-8 is stored escaped
                    path = Path(os.path.normpath(folder / disk_name(source)))
                path.unlink(missing_ok=True)
            return self._sync(folder, progress, refused, "Not deleted")

    def _folder(self) -> Path:
        folder = self.folder()
        if folder is None:
            raise UsageError(f"collection {self.config.store.collection!r} mirrors no folder yet: run "
                             "`rag-bot ingest DIR` once, then add documents here")
        return folder.resolve()

    def _sync(self, folder: Path, progress: bool, refused: list[str], refusal: str) -> str:
        started = time.monotonic()
        report = run_ingest(self.config, folder, progress=progress, embeddings=self.embeddings)
        lines = [f"{label}: {', '.join(shown(name) for name in names)}" for label, names in
                 (("Added", report.added), ("Updated", report.updated), ("Removed", report.deleted)) if names]
        lines += [f"{refusal}: {reason}" for reason in refused]
        lines += [f"Skipped: {shown(skip.source)}: {skip.reason}" for skip in report.skipped]
        if report.added or report.updated or report.deleted:
            note = self.after_change(report) if self.after_change else None
            lines += [note] if note else []
        elif not refused and not report.skipped:
            lines.append("Nothing changed.")
        lines.append(f"{report.chunks_total} chunks in collection {report.collection!r} "
                     f"({time.monotonic() - started:.1f} s)")
        return "\n".join(lines)

"""Stage 4: keep the Chroma collection in sync with the folder.

Two records live in one SQLite file under `data_dir/records/`:
- LangChain's `SQLRecordManager`, used through `langchain_core.indexing.index()`: it knows every
  chunk id (a hash of text and metadata) and which file it came from, so unchanged chunks are never
  re-embedded and a changed file's stale chunks are deleted;
- our `files` table (size, mtime, sha256, chunk count per file), written only after the file's
  chunks are in the store. A file whose size and mtime are unchanged is not even read again.

Every step writes the store first and the records last, so a run killed at any moment leaves
nothing that the next run does not repair. The collection itself names the folder it mirrors and the
record that keeps it, and holds the lease of the running ingest (see `ownership`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import text

from rag_bot.bm25 import bm25_path, rebuild_bm25
from rag_bot.config import Config
from rag_bot.errors import StoreError
from rag_bot.store import (META_FOLDER, META_OWNER_AT, META_RECIPE, META_VERSION, check_model, fresh_metadata,
                           get_collection, open_client, open_vectorstore, pages, record_model, store_key,
                           update_metadata)

from .discover import Candidate
from .ownership import Claimant, StoreLease, check_owner, claim, recipe

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rag_bot_files (source TEXT PRIMARY KEY, size INTEGER NOT NULL, "
    "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL, chunks INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rag_bot_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


@dataclass(frozen=True)
class FileRow:
    source: str
    size: int
    mtime_ns: int
    sha256: str
    chunks: int


@dataclass(frozen=True)
class Change:
    """A file whose content is new or differs from what the record holds."""

    candidate: Candidate
    sha256: str
    is_new: bool


@dataclass
class Plan:
    added: list[Change] = field(default_factory=list)
    updated: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    touched: list[FileRow] = field(default_factory=list)  # same content, new mtime: refresh the row

    @property
    def changed(self) -> list[Change]:
        return self.added + self.updated


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_path(config: Config) -> Path:
    return config.data_dir / "records" / f"{store_key(config)}.sqlite"


class FileRecord:
    """The per-store SQLite record: LangChain's record manager plus our files and meta tables."""

    def __init__(self, path: Path, namespace: str) -> None:
        from langchain_classic.indexes import SQLRecordManager

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.manager = SQLRecordManager(namespace, db_url=f"sqlite:///{path}")
        self.manager.create_schema()
        with self.manager.engine.begin() as conn:
            for statement in _SCHEMA:
                conn.execute(text(statement))

    def files(self) -> dict[str, FileRow]:
        with self.manager.engine.connect() as conn:
            rows = conn.execute(text("SELECT source, size, mtime_ns, sha256, chunks FROM rag_bot_files"))
            return {row[0]: FileRow(*row) for row in rows}

    def save_files(self, rows: list[FileRow]) -> None:
        if not rows:
            return
        with self.manager.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT OR REPLACE INTO rag_bot_files (source, size, mtime_ns, sha256, chunks) "
                    "VALUES (:source, :size, :mtime_ns, :sha256, :chunks)"
                ),
                [row.__dict__ for row in rows],
            )

    def forget_file(self, source: str) -> None:
        with self.manager.engine.begin() as conn:
            conn.execute(text("DELETE FROM rag_bot_files WHERE source = :source"), {"source": source})

    def meta(self, key: str) -> str | None:
        with self.manager.engine.connect() as conn:
            row = conn.execute(text("SELECT value FROM rag_bot_meta WHERE key = :key"), {"key": key}).first()
            return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.manager.engine.begin() as conn:
            conn.execute(text("INSERT OR REPLACE INTO rag_bot_meta (key, value) VALUES (:key, :value)"),
                         {"key": key, "value": value})

    def record_id(self) -> str:
        """This record's id, made on first use; the collection it keeps names it (see `ownership`)."""
        value = self.meta("record_id")
        if value is None:
            value = uuid.uuid4().hex
            self.set_meta("record_id", value)
        return value

    def close(self) -> None:
        self.manager.engine.dispose()


def read_files(config: Config) -> dict[str, FileRow]:
    """The files table without creating anything (empty when there is no record yet)."""
    path = record_path(config)
    if not path.exists():
        return {}
    record = FileRecord(path, config.store.collection)
    try:
        return record.files()
    finally:
        record.close()


def claimant(record: FileRecord | None, root: Path, config: Config) -> Claimant:
    """This run as the collection's ownership check sees it (`record` None: no local record yet)."""
    if record is None:
        return Claimant(root, recipe(config), "", record_path(config))
    return Claimant(root, recipe(config), record.meta("record_id") or "", record.path, record.meta("root"),
                    bool(record.files()))


def check_without_writing(config: Config, root: Path) -> None:
    """The refusals a real run would make (another model, folder or record), for --dry-run."""
    from rag_bot.store import store_exists

    collection = get_collection(open_client(config), config.store.collection) if store_exists(config) else None
    if collection is None:
        return
    check_model(collection, config.embedding.model)
    record = FileRecord(record_path(config), config.store.collection) if record_path(config).exists() else None
    try:
        check_owner(fresh_metadata(collection), collection.count(), config.store.collection,
                    claimant(record, root, config))
    finally:
        if record is not None:
            record.close()


class IngestIndex:
    """The store and its record, opened for one ingest run (holding a lock against a second run)."""

    def __init__(self, config: Config, embeddings: Any, rebuild: bool = False) -> None:
        self.config = config
        self.embeddings = embeddings
        path = record_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(path.with_suffix(".lock"), config.store.collection)
        self.lease: StoreLease | None = None
        self.client = open_client(config)
        self.record = FileRecord(path, config.store.collection)
        try:
            if rebuild:
                self._wipe(path)
            self.vectorstore = open_vectorstore(config, embeddings, self.client)
        except BaseException:
            self.__exit__()
            raise
        self.collection = self.vectorstore._collection

    def _wipe(self, path: Path) -> None:
        old = get_collection(self.client, self.config.store.collection)
        if old is not None:  # nobody else may be writing to what is about to go
            self.lease = StoreLease(old, self.record.record_id())
            self.lease.acquire()
        log.info("rebuild: deleting collection %r and its record", self.config.store.collection)
        self.record.close()
        path.unlink(missing_ok=True)
        shutil.rmtree(bm25_path(self.config), ignore_errors=True)
        if old is not None:
            self.client.delete_collection(self.config.store.collection)
        self.lease = None
        self.record = FileRecord(path, self.config.store.collection)

    def __enter__(self) -> "IngestIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lease is not None:
            self.lease.release()
        self.record.close()
        self._lock.close()

    def check(self, root: Path) -> None:
        """Refuse another model, folder or record; take the store's ingest lease; repair a record
        whose store was wiped."""
        check_model(self.collection, self.config.embedding.model)
        record_id = self.record.record_id()  # made now if this record is new
        us = claimant(self.record, root, self.config)
        check_owner(fresh_metadata(self.collection), self.collection.count(), self.config.store.collection, us)
        self.lease = StoreLease(self.collection, record_id)
        self.lease.acquire()
        claim(self.collection, us)
        self.record.set_meta("root", str(root))
        if self.collection.count() == 0 and self.record.files():
            log.warning("the collection is empty but the record lists files: re-indexing everything")
            self.record.close()
            self.record.path.unlink()
            self.record = FileRecord(self.record.path, self.config.store.collection)
            self.record.set_meta("record_id", record_id)
            self.record.set_meta("root", str(root))

    def plan(self, files: list[Candidate], keep: set[str]) -> Plan:
        """Compare the folder with the record. `keep` are sources skipped this run: left as they are."""
        return make_plan(self.record.files(), files, keep)

    def delete_sources(self, sources: list[str]) -> int:
        """Remove every chunk of these files: store first, then the record."""
        deleted = 0
        for source in sources:
            keys = self.record.manager.list_keys(group_ids=[source])
            self._renew()
            if keys:
                self.vectorstore.delete(keys)
                self.record.manager.delete_keys(keys)
            self.record.forget_file(source)
            deleted += len(keys)
        return deleted

    def write(self, docs: Iterable[Any], rows: list[FileRow], batch_size: int) -> dict[str, int]:
        """Index chunks (skipping those already stored), delete the stale chunks of their files once
        every batch is written, then record the files as done.

        `scoped_full` clean-up runs after the last batch, for the files seen in this run only: a
        changed file's unchanged chunks are never deleted because they sort into a later batch
        (per-batch `incremental` clean-up did that, and re-embedded them), and a crash leaves the
        old chunks searchable until the next run replaces them."""
        from langchain_core.indexing import index

        result = index(
            self._renewing(docs),
            self.record.manager,
            self.vectorstore,
            batch_size=batch_size,
            cleanup="scoped_full",
            source_id_key="source",
            key_encoder="sha256",
        )
        self.record.save_files(rows)
        return result

    def _renewing(self, docs: Iterable[Any], every: int = 256) -> Iterable[Any]:
        for i, doc in enumerate(docs):
            if i % every == 0:
                self._renew()
            yield doc

    def _renew(self) -> None:
        if self.lease is not None:
            self.lease.renew()

    def mark_changing(self) -> None:
        """Note, before the store changes, that the keyword index must follow (survives a crash)."""
        self.record.set_meta("bm25_stale", "1")
        self.record.set_meta("unpublished", "1")

    def sync_keyword_index(self) -> None:
        """Rebuild the BM25 index after changes when hybrid retrieval is on; otherwise drop it, so
        that a retriever turning hybrid on later rebuilds it instead of using a stale one."""
        if self.record.meta("bm25_stale") != "1":
            return
        if self.config.retriever.hybrid:
            rebuild_bm25(self.config, self.collection)
        else:
            shutil.rmtree(bm25_path(self.config), ignore_errors=True)
        self.record.set_meta("bm25_stale", "0")

    def publish(self) -> None:
        """Stamp a new version on a collection this run changed, once everything (the keyword index
        too) is in place: long-running retrievers see the stamp change and reopen the collection."""
        if self.record.meta("unpublished") == "1":  # also after a run killed before it got here
            update_metadata(self.collection, {META_VERSION: uuid.uuid4().hex})
            self.record.set_meta("unpublished", "0")

    def finish(self) -> int:
        """Record the model's dimension, remove chunks no record knows (left by a crash at the one
        moment between a store write and its record), and return the chunk count."""
        if self.embeddings.loaded:
            record_model(self.collection, self.config.embedding.model, self.embeddings.dimension)
        count = self.collection.count()
        expected = sum(row.chunks for row in self.record.files().values())
        if count != expected:
            known = set(self.record.manager.list_keys())
            orphans = [i for page in pages(self.collection, []) for i in page["ids"] if i not in known]
            if orphans:
                log.info("removing %d chunk(s) left by an interrupted run", len(orphans))
                self.collection.delete(ids=orphans)
            count = self.collection.count()
        return count


def make_plan(known: dict[str, FileRow], files: list[Candidate], keep: set[str]) -> Plan:
    plan = Plan()
    for candidate in files:
        row = known.get(candidate.source)
        if row and row.size == candidate.size and row.mtime_ns == candidate.mtime_ns:
            plan.unchanged.append(candidate.source)
            continue
        try:
            digest = file_sha256(candidate.path)
        except OSError:
            digest = ""  # the loader will report why it cannot be read
        if row and row.sha256 == digest:
            plan.unchanged.append(candidate.source)
            plan.touched.append(FileRow(row.source, candidate.size, candidate.mtime_ns, digest, row.chunks))
        elif row:
            plan.updated.append(Change(candidate, digest, is_new=False))
        else:
            plan.added.append(Change(candidate, digest, is_new=True))
    present = {c.source for c in files} | keep
    plan.deleted = sorted(source for source in known if source not in present)
    return plan


def _acquire_lock(path: Path, collection: str) -> Any:
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(f"another ingest into collection {collection!r} is running; wait for it to finish") from None
    return handle


def describe(config: Config) -> dict[str, Any]:
    """Files, chunks, model, dimension and location of the configured store; creates nothing."""
    from rag_bot.store import recorded_model, store_exists, store_location

    info: dict[str, Any] = {
        "collection": config.store.collection,
        "store": store_location(config),
        "folder": None,
        "files": 0,
        "chunks": 0,
        "model": None,
        "dimension": None,
        "chunking": None,
        "kept_by": None,
    }
    collection = get_collection(open_client(config), config.store.collection) if store_exists(config) else None
    if collection is None:
        return info
    info["chunks"] = collection.count()
    info["model"], info["dimension"] = recorded_model(collection)
    metadata = collection.metadata or {}
    info["folder"] = metadata.get(META_FOLDER)
    info["chunking"] = metadata.get(META_RECIPE)
    info["kept_by"] = metadata.get(META_OWNER_AT)
    path = record_path(config)
    if path.exists():
        record = FileRecord(path, config.store.collection)
        try:
            info["files"] = len(record.files())
            info["folder"] = info["folder"] or record.meta("root")
        finally:
            record.close()
    return info

"""Stage 4: keep the Chroma collection in sync with the folder.

The ingest record lives in the store (see `record`): the collection's own chunks are the record of
chunk keys that LangChain's `index()` consults (so unchanged chunks are never re-embedded and a
changed file's stale chunks are deleted), and a companion collection holds the files table (size,
mtime, sha256, chunk count per file), written only after the file's chunks are in the store. A file
whose size and mtime are unchanged is not even read again.

Every step writes the chunks first and the files table last, so a run killed at any moment leaves
nothing that the next run does not repair; a files table that disagrees with the chunks (counts
differ) is checked file by file and repaired. The collection names the folder it mirrors and holds
the lease of the running ingest (see `ownership`); `data_dir` keeps only a lock file and the BM25
index.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from rag_bot.bm25 import bm25_path, rebuild_bm25
from rag_bot.config import Config
from rag_bot.errors import StoreError
from rag_bot.store import (LEGACY_OWNER, META_UNPUBLISHED, META_VERSION, check_encoder, check_model, fresh_metadata, get_collection,
                           open_client, open_vectorstore, record_model, store_key, update_metadata)

from .discover import Candidate
from .loaders import reader_version
from .ownership import StoreLease, check_owner, claim, recipe
from .record import (FileRow, LegacyRecord, StoreFiles, StoreRecordManager, files_name, has_files_table, read_legacy,
                     stored_rows)

if TYPE_CHECKING:
    from langchain_core.indexing.api import IndexingResult

log = logging.getLogger(__name__)


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


def lock_path(config: Config) -> Path:
    """The local lock of ingests from this data_dir into this collection."""
    return config.data_dir / "records" / f"{store_key(config)}.lock"


def legacy_record_path(config: Config) -> Path:
    """Where the ingest record lived before it moved into the store (read once, then renamed)."""
    return config.data_dir / "records" / f"{store_key(config)}.sqlite"


def _legacy_for(config: Config, client: Any, collection: Any, metadata: dict[str, Any]) -> LegacyRecord | None:
    """The old local record that kept this collection, if the collection has no files table yet."""
    if has_files_table(client, collection):
        return None
    legacy = read_legacy(legacy_record_path(config))
    if legacy is None or metadata.get(LEGACY_OWNER) not in (None, legacy.record_id):
        return None
    return legacy


def read_files(config: Config) -> dict[str, FileRow]:
    """The files table of the configured collection without creating anything (empty when none)."""
    from rag_bot.store import store_exists

    client = open_client(config) if store_exists(config) else None
    collection = get_collection(client, config.store.collection) if client is not None else None
    if collection is None:
        return {}
    rows = stored_rows(client, collection)
    if rows is None:
        legacy = _legacy_for(config, client, collection, fresh_metadata(collection))
        rows = legacy.rows if legacy else {}
    return rows


def check_without_writing(config: Config, root: Path) -> None:
    """The refusals a real run would make (another model, folder or recipe), for --dry-run."""
    from rag_bot.store import store_exists

    client = open_client(config) if store_exists(config) else None
    collection = get_collection(client, config.store.collection) if client is not None else None
    if collection is None:
        return
    check_model(collection, config.embedding.model)
    metadata = fresh_metadata(collection)
    legacy = _legacy_for(config, client, collection, metadata)
    check_owner(metadata, collection.count(), config.store.collection, root, recipe(config),
                legacy.root if legacy else None)


class IngestIndex:
    """The store and its record, opened for one ingest run (holding a local lock against a second
    run from this data_dir; `check()` takes the store's lease against runs from anywhere)."""

    def __init__(self, config: Config, embeddings: Any, rebuild: bool = False) -> None:
        self.config = config
        self.embeddings = embeddings
        self.lock = lock_path(config)
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _acquire_lock(self.lock, config.store.collection)
        self.lease: StoreLease | None = None
        self.client = open_client(config)
        try:
            if rebuild:
                self._wipe()
            self.vectorstore = open_vectorstore(config, embeddings, self.client)
        except BaseException:
            self.__exit__()
            raise
        collection = get_collection(self.client, config.store.collection)
        if collection is None:  # deleted between being opened and looked up: another rebuild
            self.__exit__()
            raise StoreError(f"store.collection: {config.store.collection!r} was deleted while this ingest opened it "
                             "(another --rebuild?); run the ingest again")
        self.collection = collection
        self.manager = StoreRecordManager(self.collection)
        self._files: StoreFiles | None = None

    def _wipe(self) -> None:
        name = self.config.store.collection
        old = get_collection(self.client, name)
        if old is not None:  # nobody else may be writing to what is about to go
            self.lease = StoreLease(old, str(self.lock))
            self.lease.acquire()
        log.info("rebuild: deleting collection %r and its record", name)
        shutil.rmtree(bm25_path(self.config), ignore_errors=True)
        if get_collection(self.client, files_name(name)) is not None:
            self.client.delete_collection(files_name(name))
        if old is not None:
            self.client.delete_collection(name)
        self.lease = None

    def __enter__(self) -> "IngestIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.lease is not None:
            self.lease.release()
        self._lock.close()

    @property
    def files(self) -> StoreFiles:
        if self._files is None:
            raise RuntimeError("IngestIndex.check() opens the files table")
        return self._files

    def check(self, root: Path) -> None:
        """Refuse another model, folder or recipe; take the store's ingest lease; open the files
        table (bringing in an old local record the first time)."""
        check_model(self.collection, self.config.embedding.model)
        metadata = fresh_metadata(self.collection)
        legacy = _legacy_for(self.config, self.client, self.collection, metadata)
        check_owner(metadata, self.collection.count(), self.config.store.collection, root, recipe(self.config),
                    legacy.root if legacy else None)
        self.lease = StoreLease(self.collection, str(self.lock))
        self.lease.acquire()
        claim(self.collection, root, recipe(self.config))
        self._files = StoreFiles(self.client, self.collection)
        if self._files.created and legacy is not None:
            log.info("moving the ingest record of %d file(s) from %s into the store", len(legacy.rows), legacy.path)
            self._files.save(list(legacy.rows.values()))
            legacy.path.rename(legacy.path.with_name(legacy.path.name + ".moved-to-store"))

    def plan(self, files: list[Candidate], keep: set[str]) -> Plan:
        """Compare the folder with the record. `keep` are sources skipped this run: left as they are.

        When the chunks in the store do not add up to the files table (a run killed between a
        file's chunks and its row, chunks deleted by hand), each file is checked: one whose chunk
        count differs is indexed again (only missing chunks are embedded), and chunks of files that
        neither the table nor the folder has any more are deleted."""
        rows = self.files.rows()
        stale: set[str] = set()
        strays: list[str] = []
        if self.collection.count() != sum(row.chunks for row in rows.values()):
            counts = self.manager.chunk_counts()
            stale = {source for source, row in rows.items() if counts.get(source, 0) != row.chunks}
            present = {candidate.source for candidate in files} | keep
            strays = sorted(source for source in counts if source and source not in rows and source not in present)
            if stale or strays:
                log.warning("the store and its files table disagree on %d file(s): repairing them",
                            len(stale) + len(strays))
        plan = make_plan(rows, files, keep, stale)
        plan.deleted = sorted(set(plan.deleted) | set(strays))
        return plan

    def save_files(self, rows: list[FileRow]) -> None:
        self.files.save(rows)

    def delete_sources(self, sources: list[str]) -> int:
        """Remove every chunk of these files: store first, then the files table."""
        deleted = 0
        for source in sources:
            self._renew()
            keys = self.manager.ids_of(source)
            if keys:
                self.manager.delete_keys(keys)
            self.files.forget([source])
            deleted += len(keys)
        return deleted

    def write(self, docs: Iterable[Any], rows: list[FileRow], batch_size: int) -> IndexingResult:
        """Index chunks (skipping those already stored), delete the stale chunks of their files once
        every batch is written, then record the files as done.

        `scoped_full` clean-up runs after the last batch, for the files seen in this run only: a
        changed file's unchanged chunks are never deleted because they sort into a later batch
        (per-batch `incremental` clean-up did that, and re-embedded them), and a crash leaves the
        old chunks searchable until the next run replaces them."""
        from langchain_core.indexing import index

        check_encoder(self.collection, self.embeddings, self.config.chunking.context_header)
        result = index(
            self._renewing(docs),
            self.manager,
            self.vectorstore,
            batch_size=batch_size,
            cleanup="scoped_full",
            source_id_key="source",
            key_encoder="sha256",
        )
        self.files.save(rows)
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
        """Note in the store, before it changes, that a new version must be published (survives a
        crash: the next run from any data_dir publishes it)."""
        update_metadata(self.collection, {META_UNPUBLISHED: "1"})

    def publish(self) -> None:
        """Stamp a new version on a collection that changed, once everything is in place, with the
        local keyword index (hybrid on) built for that version: long-running retrievers see the stamp
        change and reopen the collection; other data_dirs rebuild their keyword index for it."""
        if fresh_metadata(self.collection).get(META_UNPUBLISHED) != "1":
            return
        version = uuid.uuid4().hex
        if self.config.retriever.hybrid:
            rebuild_bm25(self.config, self.collection, version)
        else:
            shutil.rmtree(bm25_path(self.config), ignore_errors=True)
        update_metadata(self.collection, {META_VERSION: version, META_UNPUBLISHED: ""})

    def finish(self) -> int:
        """Record the model's dimension and return the chunk count."""
        if self.embeddings.loaded:
            record_model(self.collection, self.config.embedding.model, self.embeddings.dimension,
                         getattr(self.embeddings, "encoder", None))
        return self.collection.count()


def make_plan(known: dict[str, FileRow], files: list[Candidate], keep: set[str],
              stale: set[str] = frozenset()) -> Plan:  # type: ignore[assignment]
    """Added, updated, unchanged and deleted files. `stale`: files whose stored chunks do not match
    their row, indexed again whatever their size, mtime and hash say; so is a file an older version of
    its loader read (`loaders.reader_version`)."""
    plan = Plan()
    for candidate in files:
        row = known.get(candidate.source)
        if row and (candidate.source in stale or row.reader != reader_version(candidate.source)):
            plan.updated.append(Change(candidate, _sha256_or_empty(candidate.path), is_new=False))
            continue
        if row and row.size == candidate.size and row.mtime_ns == candidate.mtime_ns:
            plan.unchanged.append(candidate.source)
            continue
        digest = _sha256_or_empty(candidate.path)
        if row and row.sha256 == digest:
            plan.unchanged.append(candidate.source)
            plan.touched.append(FileRow(row.source, candidate.size, candidate.mtime_ns, digest, row.chunks, row.ingested,
                                        row.reader))
        elif row:
            plan.updated.append(Change(candidate, digest, is_new=False))
        else:
            plan.added.append(Change(candidate, digest, is_new=True))
    present = {c.source for c in files} | keep
    plan.deleted = sorted(source for source in known if source not in present)
    return plan


def _sha256_or_empty(path: Path) -> str:
    try:
        return file_sha256(path)
    except OSError:
        return ""  # the loader will report why it cannot be read


def _acquire_lock(path: Path, collection: str) -> Any:
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreError(f"another ingest into collection {collection!r} is running; wait for it to finish") from None
    return handle

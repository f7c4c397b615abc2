"""The ingest record, kept in the store itself: every machine and config that uses a collection
shares it, so there is exactly one record per collection and no second one can call the first
one's chunks orphans.

- **Chunk keys.** The collection is its own record. A chunk's id is the key LangChain's `index()`
  computes (a hash of its text and metadata) and its `source` metadata is the key's group, so
  `StoreRecordManager.exists()` asks the store: there is no moment at which the store and the
  record disagree, whenever a run is killed.
- **Files.** A companion collection, `<collection>.rag_bot_files`, holds one row per ingested file
  (size, mtime, sha256, chunk count), written only after the file's chunks are in the store. Its
  metadata names the collection it belongs to, so a re-created collection never inherits the
  rows of the one it replaced.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from langchain_core.indexing import RecordManager

from rag_bot.store import FILES_SUFFIX, get_collection, pages

log = logging.getLogger(__name__)

META_FILES_OF = "rag_bot.files_of"  # id of the collection whose files the companion lists
_PART = 500  # ids or sources per request


@dataclass(frozen=True)
class FileRow:
    source: str
    size: int
    mtime_ns: int
    sha256: str
    chunks: int
    ingested: float = 0.0  # when its chunks were written (epoch seconds); 0: before this was recorded
    reader: int = 1  # the version of the loader that read it (`loaders.reader_version`); 1: before this was recorded


def _parts(items: Sequence[Any], size: int = _PART) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class StoreRecordManager(RecordManager):
    """LangChain's record manager over the chunks of one Chroma collection, for `index()`.

    A key is recorded exactly when a chunk with that id is in the collection; its group is the
    chunk's `source`. Times: a key updated through this manager carries the time of that update;
    every other stored key counts as updated at time 0, before anything this manager does. One
    manager serves one ingest run, which holds the collection's lease (see `ownership`), so nobody
    else changes the chunks meanwhile and clean-up (`list_keys(before=run start)`) finds exactly the
    chunks of the run's files that the run did not write or see again.
    """

    def __init__(self, collection: Any, source_key: str = "source") -> None:
        super().__init__(namespace=collection.name)
        self.collection = collection
        self.source_key = source_key
        self._times: dict[str, float] = {}
        self._last = 0.0

    def create_schema(self) -> None:
        """Nothing to create: the collection is the record."""

    async def acreate_schema(self) -> None:
        """Nothing to create: the collection is the record."""

    def get_time(self) -> float:
        self._last = max(time.time(), self._last + 1e-6)  # strictly increasing within the run
        return self._last

    async def aget_time(self) -> float:
        return self.get_time()

    def update(self, keys: Sequence[str], *, group_ids: Sequence[str | None] | None = None,
               time_at_least: float | None = None) -> None:
        """Mark keys as written or seen now. Their groups are the `source` of the chunks the vector
        store already holds under these ids (`index()` writes the chunk, then updates the record)."""
        if group_ids is not None and len(group_ids) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(group_ids)} group ids")
        now = self.get_time()
        if time_at_least is not None and now < time_at_least:
            raise ValueError(f"the clock went back: {now} is before {time_at_least}")
        for key in keys:
            self._times[key] = now

    async def aupdate(self, keys: Sequence[str], *, group_ids: Sequence[str | None] | None = None,
                      time_at_least: float | None = None) -> None:
        self.update(keys, group_ids=group_ids, time_at_least=time_at_least)

    def exists(self, keys: Sequence[str]) -> list[bool]:
        found: set[str] = set()
        for part in _parts(keys):
            found.update(self.collection.get(ids=part, include=[])["ids"])
        return [key in found for key in keys]

    async def aexists(self, keys: Sequence[str]) -> list[bool]:
        return self.exists(keys)

    def list_keys(self, *, before: float | None = None, after: float | None = None,
                  group_ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        keys: list[str] = []
        for key in self._stored_ids(group_ids):
            updated = self._times.get(key, 0.0)
            if (before is None or updated < before) and (after is None or updated > after):
                keys.append(key)
                if limit is not None and len(keys) >= limit:
                    break
        return keys

    async def alist_keys(self, *, before: float | None = None, after: float | None = None,
                         group_ids: Sequence[str] | None = None, limit: int | None = None) -> list[str]:
        return self.list_keys(before=before, after=after, group_ids=group_ids, limit=limit)

    def delete_keys(self, keys: Sequence[str]) -> None:
        """Forget keys: their chunks leave the collection (`index()` has usually deleted them already)."""
        for part in _parts(keys):
            self.collection.delete(ids=part)
        for key in keys:
            self._times.pop(key, None)

    async def adelete_keys(self, keys: Sequence[str]) -> None:
        self.delete_keys(keys)

    def _stored_ids(self, group_ids: Sequence[str] | None) -> Iterator[str]:
        if group_ids is None:
            for page in pages(self.collection, []):
                yield from page["ids"]
            return
        for part in _parts(sorted(set(group_ids))):
            where = {self.source_key: {"$in": part}}
            yield from self.collection.get(where=where, include=[])["ids"]

    def chunk_counts(self) -> dict[str, int]:
        """How many chunks each source has in the collection (reads every chunk's metadata)."""
        counts: dict[str, int] = {}
        for page in pages(self.collection, ["metadatas"]):
            for metadata in page["metadatas"]:
                source = str((metadata or {}).get(self.source_key, ""))
                counts[source] = counts.get(source, 0) + 1
        return counts

    def ids_of(self, source: str) -> list[str]:
        return self.collection.get(where={self.source_key: source}, include=[])["ids"]


def files_name(collection_name: str) -> str:
    return collection_name + FILES_SUFFIX


class StoreFiles:
    """The files table of the ingest record: a companion collection with one row per file.

    Chroma keeps a vector for every entry; rows carry a one-number placeholder and are only ever
    read by id or in full, never searched.
    """

    def __init__(self, client: Any, collection: Any) -> None:
        self.client = client
        self.of = str(collection.id)
        self.name = files_name(collection.name)
        table = get_collection(client, self.name)
        if table is not None and (table.metadata or {}).get(META_FILES_OF) != self.of:
            log.info("collection %r was made anew: its files table starts empty", collection.name)
            client.delete_collection(self.name)
            table = None
        self.created = table is None
        self.table = table if table is not None else client.create_collection(
            self.name, embedding_function=None, metadata={META_FILES_OF: self.of})

    def rows(self) -> dict[str, FileRow]:
        return read_rows(self.table)

    def save(self, rows: list[FileRow]) -> None:
        for part in _parts(rows):
            self.table.upsert(ids=[row.source for row in part], embeddings=[[0.0]] * len(part),
                              metadatas=[{"size": row.size, "mtime_ns": row.mtime_ns, "sha256": row.sha256,
                                          "chunks": row.chunks, "ingested": row.ingested, "reader": row.reader}
                                         for row in part])

    def forget(self, sources: Sequence[str]) -> None:
        for part in _parts(sources):
            self.table.delete(ids=part)


def read_rows(table: Any) -> dict[str, FileRow]:
    rows: dict[str, FileRow] = {}
    for page in pages(table, ["metadatas"]):
        for source, meta in zip(page["ids"], page["metadatas"]):
            rows[source] = FileRow(source, int(meta["size"]), int(meta["mtime_ns"]), str(meta["sha256"]),
                                   int(meta["chunks"]), float(meta.get("ingested") or 0.0), int(meta.get("reader") or 1))
    return rows


def stored_rows(client: Any, collection: Any) -> dict[str, FileRow] | None:
    """The files table of `collection` without creating anything (None: there is none yet)."""
    table = _files_table(client, collection)
    return read_rows(table) if table is not None else None


def has_files_table(client: Any, collection: Any) -> bool:
    return _files_table(client, collection) is not None


def _files_table(client: Any, collection: Any) -> Any | None:
    table = get_collection(client, files_name(collection.name))
    if table is None or (table.metadata or {}).get(META_FILES_OF) != str(collection.id):
        return None
    return table


@dataclass(frozen=True)
class LegacyRecord:
    """The local SQLite record that kept a collection before the record moved into the store."""

    path: Path
    record_id: str | None
    root: str | None
    rows: dict[str, FileRow]


def read_legacy(path: Path) -> LegacyRecord | None:
    """The files table and identity of an old local record at `path` (None when there is none)."""
    if not path.exists():
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            meta = dict(conn.execute("SELECT key, value FROM rag_bot_meta").fetchall())
            rows = {row[0]: FileRow(*row) for row in conn.execute(
                "SELECT source, size, mtime_ns, sha256, chunks FROM rag_bot_files")}
    except sqlite3.Error as exc:
        log.warning("%s: cannot read the old ingest record (%s); the folder will be read again", path, exc)
        return None
    return LegacyRecord(path, meta.get("record_id"), meta.get("root"), rows)

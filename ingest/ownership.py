"""Who may change a collection: its identity and the ingest lease, kept in the store itself.

The local record under `data_dir` decides what ingest deletes, so a collection must have exactly one
record. The collection's metadata says which folder it mirrors and which record keeps it; every
machine and config that opens the store sees that, so a second folder or a second record (another
`data_dir`, another machine) is refused instead of deleting the first one's chunks as "orphans".

Concurrent ingests are refused through a lease in the same metadata: a token with an expiry, renewed
while the run goes on, so a killed run blocks nobody for long (and its own record, re-run on the same
machine, takes over at once: the local file lock proves the old run is gone). Chroma has no
compare-and-set, so a lease is written, read back after a moment, and kept only if it is still ours.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag_bot.errors import StoreError
from rag_bot.store import (META_FOLDER, META_LEASE, META_OWNER, META_OWNER_AT, META_RECIPE, fresh_metadata,
                           update_metadata)

log = logging.getLogger(__name__)

LEASE_SECONDS = 600.0
SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class Lease:
    token: str
    expires: float
    holder: str  # "host pid N record R", for messages and for taking over our own dead run

    def to_value(self) -> str:
        return f"{self.token} {self.expires:.0f} {self.holder}"

    @classmethod
    def parse(cls, value: Any) -> "Lease | None":
        parts = str(value or "").split(" ", 2)
        if len(parts) != 3:
            return None
        try:
            return cls(parts[0], float(parts[1]), parts[2])
        except ValueError:
            return None


def recipe(config: Any) -> str:
    """How the chunks are cut, as the collection records it."""
    return f"size {config.chunking.size}, overlap {config.chunking.overlap}"


@dataclass(frozen=True)
class Claimant:
    """The run that asks to change a collection: its folder, chunking recipe and local record."""

    root: Path
    chunking: str
    record_id: str
    record_path: Path
    record_root: str | None = None  # the folder the local record mirrored (for collections from before owners)
    record_has_files: bool = False

    @property
    def record_at(self) -> str:
        return f"{socket.gethostname()}:{self.record_path}"


def check_owner(metadata: dict[str, Any], count: int, name: str, claimant: Claimant) -> None:
    """Refuse to change a collection that mirrors another folder, was chunked another way (its
    files would mix two recipes), or is kept by another record. An empty collection takes anyone."""
    if count == 0:
        return
    recorded = metadata.get(META_RECIPE)
    if recorded and recorded != claimant.chunking:
        raise StoreError(f"chunking.size/chunking.overlap: collection {name!r} was chunked with {recorded}, but the "
                         f"config says {claimant.chunking}; re-run ingest with --rebuild (re-chunks and re-embeds "
                         f"everything), or set store.collection to another name")
    folder = metadata.get(META_FOLDER) or (claimant.record_root if claimant.record_has_files else None)
    if folder and folder != str(claimant.root):
        raise StoreError(f"store.collection: {name!r} mirrors {folder}, not {claimant.root}; set store.collection "
                         f"to another name for this folder, or re-run with --rebuild")
    owner, where = metadata.get(META_OWNER), metadata.get(META_OWNER_AT)
    if owner == claimant.record_id or (not owner and claimant.record_has_files):
        return  # ours (or ours from before owners were kept)
    if where == claimant.record_at:
        # Our own record file was deleted and made again: its predecessor cannot be writing any more.
        log.warning("the ingest record of collection %r at %s was replaced: re-indexing the folder", name, where)
        return
    raise StoreError(f"store.collection: {name!r} is kept by another ingest record "
                     f"({where or 'one this machine does not have'}); ingest with the config that uses that "
                     f"record, set store.collection to another name, or re-run with --rebuild to take the "
                     f"collection over (re-embeds everything)")


def claim(collection: Any, claimant: Claimant) -> None:
    """Write the folder, the chunking recipe and the owning record into the collection's metadata."""
    update_metadata(collection, {META_FOLDER: str(claimant.root), META_RECIPE: claimant.chunking,
                                 META_OWNER: claimant.record_id, META_OWNER_AT: claimant.record_at})


class StoreLease:
    """The lease of one ingest run on one collection: `acquire()`, `renew()` as it goes, `release()`."""

    def __init__(self, collection: Any, record_id: str, seconds: float = LEASE_SECONDS,
                 settle: float = SETTLE_SECONDS) -> None:
        self.collection = collection
        self.record_id = record_id
        self.seconds = seconds
        self.settle = settle
        self.token = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()} pid {os.getpid()} record {record_id}"
        self.expires = 0.0

    def acquire(self) -> None:
        """Take the lease, or raise `StoreError` naming the run that holds it."""
        current = Lease.parse(fresh_metadata(self.collection).get(META_LEASE))
        if current and current.token != self.token and self._alive(current):
            raise self._busy(current)
        self._write()
        time.sleep(self.settle)  # a rival that wrote at the same moment: the last write wins, for both
        current = Lease.parse(fresh_metadata(self.collection).get(META_LEASE))
        if current is None or current.token != self.token:
            raise self._busy(current)

    def renew(self) -> None:
        """Extend the lease when half of it has passed (cheap to call often)."""
        if time.time() < self.expires - self.seconds / 2:
            return
        current = Lease.parse(fresh_metadata(self.collection).get(META_LEASE))
        if current is not None and current.token != self.token and self._alive(current):
            raise StoreError(f"store.collection: the ingest lease on {self.collection.name!r} was taken by "
                             f"{current.holder} while this run was paused; run ingest again when it has finished")
        self._write()

    def release(self) -> None:
        """Give the lease back (only if it is still ours)."""
        try:
            current = Lease.parse(fresh_metadata(self.collection).get(META_LEASE))
            if current is not None and current.token == self.token:
                update_metadata(self.collection, {META_LEASE: ""})
        except Exception:  # the collection is gone (a rebuild) or the server went away: nothing to give back
            pass

    def _alive(self, lease: Lease) -> bool:
        # Our own record's earlier run is dead: this process holds the record's local file lock.
        return lease.expires > time.time() and not lease.holder.endswith(f" record {self.record_id}")

    def _write(self) -> None:
        self.expires = time.time() + self.seconds
        update_metadata(self.collection, {META_LEASE: Lease(self.token, self.expires, self.holder).to_value()})

    def _busy(self, lease: Lease | None) -> StoreError:
        who = f" ({lease.holder}, lease until {time.strftime('%H:%M:%S', time.localtime(lease.expires))})" if lease else ""
        return StoreError(f"another ingest into collection {self.collection.name!r} is running{who}; wait for "
                          f"it to finish (if that run was stopped, its lease runs out at the time shown)")

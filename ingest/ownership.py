"""Who may change a collection: its identity and the ingest lease, kept in the store itself.

The collection's metadata says which folder it mirrors and how its chunks were cut; every machine
and config that opens the store sees that, so a second folder (or another chunking recipe) is
refused instead of mixing with, or deleting, the first one's chunks. The ingest record that decides
what to delete lives in the store too (see `record`), so every data_dir shares the one record.

Concurrent ingests are refused through a lease in the same metadata: a token with an expiry, renewed
while the run goes on, so a killed run blocks nobody for long (and a run from the same data_dir on
the same machine takes over at once: the local file lock it holds proves the old run is gone).
Chroma has no compare-and-set, so a lease is written, read back after a moment, and kept only if
it is still ours.
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
from rag_bot.store import (LEGACY_OWNER, LEGACY_OWNER_AT, META_FOLDER, META_LEASE, META_RECIPE, fresh_metadata,
                           update_metadata)

log = logging.getLogger(__name__)

LEASE_SECONDS = 600.0
SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class Lease:
    token: str
    expires: float
    holder: str  # "host pid N lock PATH", for messages and for taking over our own dead run

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
    """How the chunks are cut (and embedded), as the collection records it."""
    header = ", context header" if config.chunking.context_header else ""
    return f"size {config.chunking.size}, overlap {config.chunking.overlap}{header}"


def check_owner(metadata: dict[str, Any], count: int, name: str, root: Path, chunking: str,
                legacy_root: str | None = None) -> None:
    """Refuse to change a collection that mirrors another folder, or was chunked another way (its
    files would mix two recipes). An empty collection takes anyone. `legacy_root`: the folder an
    old local record kept the collection for, before collections named their folder."""
    if count == 0:
        return
    recorded = metadata.get(META_RECIPE)
    if recorded and recorded != chunking:
        raise StoreError(f"chunking: collection {name!r} was chunked with {recorded}, but the "
                         f"config says {chunking}; re-run ingest with --rebuild (re-chunks and re-embeds "
                         f"everything), or set store.collection to another name")
    folder = metadata.get(META_FOLDER) or legacy_root
    if folder and folder != str(root):
        raise StoreError(f"store.collection: {name!r} mirrors {folder}, not {root}; set store.collection "
                         f"to another name for this folder, or re-run with --rebuild")


def claim(collection: Any, root: Path, chunking: str) -> None:
    """Write the folder and the chunking recipe into the collection's metadata."""
    update_metadata(collection, {META_FOLDER: str(root), META_RECIPE: chunking},
                    drop=(LEGACY_OWNER, LEGACY_OWNER_AT))


class StoreLease:
    """The lease of one ingest run on one collection: `acquire()`, `renew()` as it goes, `release()`."""

    def __init__(self, collection: Any, lock: str, seconds: float = LEASE_SECONDS,
                 settle: float = SETTLE_SECONDS) -> None:
        """`lock`: the local lock file this run holds (one per data_dir and collection)."""
        self.collection = collection
        self.lock = lock
        self.seconds = seconds
        self.settle = settle
        self.token = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()} pid {os.getpid()} lock {lock}"
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
        # An earlier run from our data_dir on this machine is dead: this process holds its file lock.
        ours = lease.holder.startswith(f"{socket.gethostname()} pid ") and lease.holder.endswith(f" lock {self.lock}")
        return lease.expires > time.time() and not ours

    def _write(self) -> None:
        self.expires = time.time() + self.seconds
        update_metadata(self.collection, {META_LEASE: Lease(self.token, self.expires, self.holder).to_value()})

    def _busy(self, lease: Lease | None) -> StoreError:
        who = f" ({lease.holder}, lease until {time.strftime('%H:%M:%S', time.localtime(lease.expires))})" if lease else ""
        return StoreError(f"another ingest into collection {self.collection.name!r} is running{who}; wait for "
                          f"it to finish (if that run was stopped, its lease runs out at the time shown)")

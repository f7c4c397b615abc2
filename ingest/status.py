"""What `rag-bot stats` shows of a collection: files, chunks, model, folder, chunking recipe, a
running ingest and where the store is; all read from the store, nothing created."""

from __future__ import annotations

import time
from typing import Any

from rag_bot.config import Config
from rag_bot.store import META_ENCODER, META_FOLDER, META_LEASE, META_RECIPE, fresh_metadata, get_collection, open_client

from .index import read_files
from .ownership import Lease

DESCRIBED = ("store", "dimension", "embedded_by", "ingest_running")


def describe(config: Config) -> dict[str, Any]:
    """Files, chunks, model, dimension, folder, recipe, running ingest and location of the
    configured store, all read from the store; creates nothing."""
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
        "embedded_by": None,
        "ingest_running": None,
    }
    collection = get_collection(open_client(config), config.store.collection) if store_exists(config) else None
    if collection is None:
        return info
    info["chunks"] = collection.count()
    info["model"], info["dimension"] = recorded_model(collection)
    metadata = fresh_metadata(collection)
    info["folder"] = metadata.get(META_FOLDER)
    info["chunking"] = metadata.get(META_RECIPE)
    info["embedded_by"] = metadata.get(META_ENCODER)
    lease = Lease.parse(metadata.get(META_LEASE))
    if lease is not None and lease.expires > time.time():
        info["ingest_running"] = lease.holder
    info["files"] = len(read_files(config))
    return info


def describe_lines(info: dict[str, Any]) -> list[str]:
    """What `rag-bot stats` prints of `describe()`'s figures (and any extra keys, such as the reranker)."""
    if info["model"] is None and info["chunks"] == 0:
        return [f"No documents yet in collection {info['collection']!r} at {info['store']}; run `rag-bot ingest DIR`."]
    shown = {"collection": f"{info['collection']} at {info['store']}", "folder": info["folder"] or "unknown",
             "files": info["files"], "chunks": info["chunks"],
             "model": f"{info['model']} ({info['dimension'] or '?'} dimensions"
                      + (f", embedded by {info['embedded_by']})" if info.get("embedded_by") else ")"),
             "chunking": info["chunking"] or "unknown",
             "ingest": "running: " + info["ingest_running"] if info["ingest_running"] else "none running"}
    shown.update({key: value for key, value in info.items() if key not in (*shown, *DESCRIBED)})
    return [f"{key + ':':<11} {value}" for key, value in shown.items()]

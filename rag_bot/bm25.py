"""The keyword index beside the vector store: BM25 (the `bm25s` library, Snowball English stemming).

Built from the collection's own chunk ids and texts and saved under `data_dir/bm25/`, without
pickle. Ingest rebuilds it after every change; the retriever rebuilds it when it finds it missing
or out of step with the collection (for example after a crash, or when hybrid was just turned on).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .config import Config
from .store import pages, store_key

log = logging.getLogger(__name__)

IDS_FILE = "chunk_ids.json"


def bm25_path(config: Config) -> Path:
    return config.data_dir / "bm25" / store_key(config)


def _tokenize(texts: list[str], return_ids: bool) -> Any:
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"),
                          return_ids=return_ids, show_progress=False)


class Bm25Index:
    """A BM25 index over chunk ids; `search()` returns (chunk id, score) pairs, best first."""

    def __init__(self, model: Any, ids: list[str]) -> None:
        self._model = model
        self.ids = ids

    @classmethod
    def build(cls, ids: list[str], texts: list[str]) -> "Bm25Index":
        import bm25s

        model = bm25s.BM25()
        if texts:
            model.index(_tokenize(texts, return_ids=True), show_progress=False)
        return cls(model, list(ids))

    def save(self, path: Path) -> None:
        """Write to a sibling folder, then swap it in: readers never see half an index."""
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.ids:
            self._model.save(str(tmp))
        (tmp / IDS_FILE).write_text(json.dumps(self.ids), encoding="utf-8")
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: Path) -> "Bm25Index | None":
        """The saved index, or None when there is none."""
        ids_file = path / IDS_FILE
        if not ids_file.exists():
            return None
        import bm25s

        ids = json.loads(ids_file.read_text(encoding="utf-8"))
        model = bm25s.BM25.load(str(path)) if ids else bm25s.BM25()
        return cls(model, ids)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        if not self.ids:
            return []
        tokens = _tokenize([query], return_ids=False)
        if not tokens[0]:
            return []
        k = min(k, len(self.ids))
        documents, scores = self._model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [(self.ids[int(i)], float(s)) for i, s in zip(documents[0], scores[0]) if s > 0]


def rebuild_bm25(config: Config, collection: Any) -> Bm25Index:
    """Build the BM25 index from everything in the collection and save it."""
    ids: list[str] = []
    texts: list[str] = []
    for page in pages(collection, ["documents"]):
        ids.extend(page["ids"])
        texts.extend(page["documents"])
    index = Bm25Index.build(ids, texts)
    index.save(bm25_path(config))
    log.info("BM25 index rebuilt over %d chunks", len(ids))
    return index


def load_bm25(config: Config, collection: Any) -> Bm25Index:
    """The BM25 index in step with the collection, rebuilt first if missing or stale."""
    index = Bm25Index.load(bm25_path(config))
    if index is None or len(index.ids) != collection.count():
        log.info("BM25 index missing or out of date: rebuilding")
        index = rebuild_bm25(config, collection)
    return index

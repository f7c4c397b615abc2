"""The keyword index beside the vector store: BM25 (the `bm25s` library, Snowball English stemming).

Built from the collection's own chunk ids and texts and saved under `data_dir/bm25/`, without
pickle, with the version stamp of the collection it was built from. Ingest rebuilds it after every
change; the retriever rebuilds it when it finds it missing or built from another version (an ingest
from another data_dir or machine, a crash, hybrid just turned on).
"""

from __future__ import annotations

import json
import logging
import shutil
from array import array
from pathlib import Path
from typing import Any, Iterable, Iterator

from .config import Config
from .store import META_VERSION, contextual_text, fresh_metadata, pages, store_key

log = logging.getLogger(__name__)

IDS_FILE = "chunk_ids.json"
VERSION_FILE = "version.json"


def bm25_path(config: Config) -> Path:
    return config.data_dir / "bm25" / store_key(config)


def _tokenize(texts: list[str], return_ids: bool) -> Any:
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"),
                          return_ids=return_ids, show_progress=False)


class Bm25Index:
    """A BM25 index over chunk ids; `search()` returns (chunk id, score) pairs, best first."""

    def __init__(self, model: Any, ids: list[str], version: str | None = None) -> None:
        self._model = model
        self.ids = ids
        self.version = version  # the collection's version stamp when the index was built

    @classmethod
    def build(cls, ids: list[str], texts: Iterable[str], version: str | None = None) -> "Bm25Index":
        """The index over `texts` (one per id, in order): see `build_paged`."""
        return cls.build_paged([(list(ids), list(texts))], version)

    @classmethod
    def build_paged(cls, parts: Iterable[tuple[list[str], list[str]]], version: str | None = None) -> "Bm25Index":
        """The index over (ids, texts) parts, tokenised a part at a time: only each text's token ids
        (4 bytes a token) are kept, never all the texts, so memory stays small for a large store."""
        import bm25s

        ids: list[str] = []
        token_ids: list[array] = []
        vocab: dict[str, int] = {}
        for part_ids, part_texts in parts:
            if not part_ids:
                continue
            tokens = _tokenize(part_texts, return_ids=True)
            local = [0] * len(tokens.vocab)  # this part's token ids -> ids in the whole vocabulary
            for token, index in tokens.vocab.items():
                local[index] = vocab.setdefault(token, len(vocab))
            token_ids.extend(array("i", [local[t] for t in doc]) for doc in tokens.ids)
            ids.extend(part_ids)
        model = bm25s.BM25()
        if ids:
            model.index(bm25s.tokenization.Tokenized(ids=token_ids, vocab=vocab), show_progress=False)
        return cls(model, ids, version)

    def save(self, path: Path) -> None:
        """Write to a sibling folder, then swap it in: readers never see half an index."""
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.ids:
            self._model.save(str(tmp))
        (tmp / IDS_FILE).write_text(json.dumps(self.ids), encoding="utf-8")
        (tmp / VERSION_FILE).write_text(json.dumps({"version": self.version}), encoding="utf-8")
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
        version_file = path / VERSION_FILE
        version = json.loads(version_file.read_text(encoding="utf-8"))["version"] if version_file.exists() else None
        model = bm25s.BM25.load(str(path)) if ids else bm25s.BM25()
        return cls(model, ids, version)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        if not self.ids:
            return []
        tokens = _tokenize([query], return_ids=False)
        if not tokens[0]:
            return []
        k = min(k, len(self.ids))
        documents, scores = self._model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [(self.ids[int(i)], float(s)) for i, s in zip(documents[0], scores[0]) if s > 0]


def rebuild_bm25(config: Config, collection: Any, version: str | None = None) -> Bm25Index:
    """Build the BM25 index from everything in the collection and save it, stamped with `version`
    (default: the collection's version stamp now)."""
    header = config.chunking.context_header

    def parts() -> Iterator[tuple[list[str], list[str]]]:
        for page in pages(collection, ["documents", "metadatas"] if header else ["documents"]):
            texts = page["documents"]
            if header:
                texts = [contextual_text(text, meta or {}) for text, meta in zip(texts, page["metadatas"])]
            yield page["ids"], texts

    if version is None:
        version = fresh_metadata(collection).get(META_VERSION)
    index = Bm25Index.build_paged(parts(), version)
    index.save(bm25_path(config))
    log.info("BM25 index rebuilt over %d chunks", len(index.ids))
    return index


def load_bm25(config: Config, collection: Any) -> Bm25Index:
    """The BM25 index in step with the collection, rebuilt first if missing or stale."""
    index = Bm25Index.load(bm25_path(config))
    if (index is None or len(index.ids) != collection.count()
            or index.version != fresh_metadata(collection).get(META_VERSION)):
        log.info("BM25 index missing or out of date: rebuilding")
        index = rebuild_bm25(config, collection)
    return index

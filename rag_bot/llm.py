"""The language model behind the chat, through LangChain: llama-cpp-python in this process, or any
OpenAI-compatible server. Both take the same (system, user) prompt pair from the chain and stream
text; both count tokens so the chain can keep the prompt within `llm.n_ctx`.

Kept apart from `models.py` (the encoders) because its libraries, files and locking differ: a
`llama_cpp.Llama` is not thread-safe, so generations through one `LlamaCppLLM` are serialised.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import warnings
import weakref
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator

from .config import Config, LLMConfig
from .errors import ModelError, first_line
from .hub import HF_PREFIX, hub_file_path, model_package, shared_models_dir

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


class ChatLLM:
    """What the chain needs from a language model."""

    def __init__(self, config: LLMConfig) -> None:
        self.config = config
        self.n_ctx = config.n_ctx
        self.max_tokens = config.max_tokens

    def stream(self, system: str, user: str, *, max_tokens: int | None = None, stop: list[str] | None = None,
               config: Any = None, temperature: float | None = None) -> Iterator[str]:
        """The reply to `user` after `system`, piece by piece; `temperature` overrides `llm.temperature` for this
        call (0: the most likely words, as the follow-up rewrite wants)."""
        raise NotImplementedError

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def preload(self) -> None:
        """Load the model now (for example in a background thread) rather than on the first question."""


class LlamaCppLLM(ChatLLM):
    """A GGUF model run by llama-cpp-python (LangChain's `LlamaCpp`), loaded once on first use."""

    def __init__(self, config: LLMConfig, data_dir: Path) -> None:
        super().__init__(config)
        self.data_dir = Path(data_dir)
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._template: Any = None

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def preload(self) -> None:
        self.model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def generate_lock(self) -> threading.Lock:
        """Held while the model reads or writes: a judge sharing this model (`AnswerJudge(shared=...)`) holds it too."""
        return self._generate_lock

    @property
    def template(self) -> Any:
        """The GGUF's chat template (None: a plain-prompt model), once loaded."""
        self.model
        return self._template

    def model_file(self) -> Path:
        """The GGUF file, assembling a packaged model the first time into the machine's shared model cache
        (`shared_models_dir()`: one copy for every data folder)."""
        return gguf_file(self.config.model_path, shared_models_dir(), "llm.model_path")

    def _load(self) -> Any:
        path = self.model_file()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # langchain-community's sunset notice
            from langchain_community.llms import LlamaCpp
        try:
            with quiet_native_logs():
                model = LlamaCpp(model_path=str(path), n_ctx=self.n_ctx, max_tokens=self.max_tokens,
                                 temperature=self.config.temperature,
                                 n_threads=self.config.threads or os.cpu_count(),
                                 n_batch=min(512, self.n_ctx), verbose=False,
                                 # LangChain's defaults (10000 / 1.0) override the model's own RoPE
                                 # settings (Gemma 3: base 1e6); 0 lets llama.cpp read them from the file
                                 rope_freq_base=0.0, rope_freq_scale=0.0,
                                 # reads a prompt about 9% faster on 2 CPU cores (500 tokens: 6.5 s against 7.1 s)
                                 model_kwargs={"flash_attn": True})
        except Exception as exc:
            raise ModelError(f"llm.model_path: llama-cpp-python could not load {path}: {first_line(exc)}; "
                             f"{repair_hint(self.config.model_path, path)}") from exc
        self._template = chat_template(model.client)
        # Free the native model while the interpreter still works: left to `Llama.__del__` at exit,
        # llama-cpp-python prints a traceback (its module globals are already gone by then).
        weakref.finalize(self, model.client.close)
        log.info("loaded %s (%s)", path.name, "chat template" if self._template else "plain prompt")
        return model

    def render(self, system: str, user: str) -> str:
        """One prompt string: the model's own chat template when its GGUF has one, else plain text."""
        model = self.model
        if self._template is None:
            return f"{system}\n\n{user}" if system else user
        return apply_template(self._template, model.client, system, user)

    def count_tokens(self, text: str) -> int:
        return len(self.model.client.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def stream(self, system: str, user: str, *, max_tokens: int | None = None, stop: list[str] | None = None,
               config: Any = None, temperature: float | None = None) -> Iterator[str]:
        prompt = self.render(system, user)
        with self._generate_lock:  # one generation at a time per model
            yield from self.model.stream(prompt, config=config, stop=stop or None,
                                         max_tokens=max_tokens or self.max_tokens, **_sampling(temperature))


class OpenAILLM(ChatLLM):
    """Any OpenAI-compatible chat server (llama-cpp-python's own server, vLLM, ...), via `ChatOpenAI`.

    The server's tokenizer is unknown here, so tokens are estimated at one per three characters,
    which over-counts English text and keeps the prompt within `llm.n_ctx`.
    """

    def __init__(self, config: LLMConfig) -> None:
        super().__init__(config)
        from langchain_openai import ChatOpenAI

        api_key = config.api_key or os.environ.get("OPENAI_API_KEY") or "none"
        self.model = ChatOpenAI(base_url=config.base_url, model=config.model, api_key=api_key,
                                temperature=config.temperature, max_tokens=config.max_tokens,
                                timeout=config.timeout, max_retries=1, streaming=True)

    def count_tokens(self, text: str) -> int:
        return math.ceil(len(text) / 3)

    def stream(self, system: str, user: str, *, max_tokens: int | None = None, stop: list[str] | None = None,
               config: Any = None, temperature: float | None = None) -> Iterator[str]:
        import openai
        from langchain_core.messages import HumanMessage, SystemMessage

        messages = ([SystemMessage(system)] if system else []) + [HumanMessage(user)]
        try:
            for chunk in self.model.stream(messages, config=config, stop=stop or None,
                                           max_tokens=max_tokens or self.max_tokens, **_sampling(temperature)):
                text = _content_text(chunk.content)
                if text:
                    yield text
        except openai.OpenAIError as exc:
            raise ModelError(f"llm.base_url: the server at {self.config.base_url} failed: "
                             f"{first_line(exc)}; is it running?") from exc


def _sampling(temperature: float | None) -> dict[str, float]:
    """The per-call sampling override, if any."""
    return {} if temperature is None else {"temperature": temperature}


def load_llm(config: Config) -> ChatLLM:
    """The configured language model; the llamacpp backend loads its file on first use."""
    if config.llm.backend == "openai":
        return OpenAILLM(config.llm)
    return LlamaCppLLM(config.llm, config.data_dir)


def gguf_file(ref: str, models_dir: Path, key: str) -> Path:
    """The GGUF named by `ref` (a file, `package:<module>` or `hf:OWNER/REPO/FILE.gguf`), checked; a packaged
    model is assembled into `models_dir` the first time. `key` names the setting in errors."""
    if ref.startswith("package:"):
        path = packaged_gguf(ref, Path(models_dir), key)
    elif ref.startswith(HF_PREFIX):
        path = hub_file_path(ref)
    else:
        path = Path(ref)
    check_gguf(path, key, repair_hint(ref, path))
    return path


def repair_hint(ref: str, path: Path) -> str:
    """What to do about the model file of `ref` (at `path`) when it is damaged or does not load."""
    if ref.startswith("package:"):
        return f"delete {path}: it is assembled again from its package at the next start"
    if ref.startswith(HF_PREFIX):
        return f"delete {path} and run `rag-bot models fetch` to download it again"
    return "point it at a complete .gguf file (download it again if it was cut short)"


def packaged_gguf(ref: str, folder: Path, key: str = "llm.model_path") -> Path:
    """Assemble the GGUF shipped in the package named by `package:<module>` into `folder` once; a file
    assembled before is verified first (see `verified`) and assembled again when it was damaged."""
    module = model_package(ref, key)
    module_name = module.__name__
    if not hasattr(module, "assemble"):
        raise ModelError(f"{key}: module {module_name!r} has no assemble(); it does not ship a GGUF model")
    target = folder / getattr(module, "MODEL_NAME", f"{module_name}.gguf")
    if target.exists() and not verified(target, getattr(module, "EXPECTED_SHA256", None)):
        log.warning("%s: %s is damaged (not the file its package ships); assembling it again", key, target)
    elif target.exists():
        return target
    log.warning("assembling the packaged model into %s (once)", target)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # another process may assemble too
    try:
        module.assemble(partial, overwrite=True)  # verifies the sha256
    except (ImportError, ValueError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise ModelError(f"{key}: cannot assemble {ref!r}: {first_line(exc)}") from exc
    os.replace(partial, target)
    _record_check(target, getattr(module, "EXPECTED_SHA256", None))  # assemble() checked it as it wrote
    return target


def verified(path: Path, sha256: str | None) -> bool:
    """Whether `path` still has the `sha256` its package promises. The whole file is hashed once per
    change of the file (size, modification time, inode): a stamp beside it records the last good check,
    so later starts cost one `stat`. Without a known hash there is nothing to check."""
    if sha256 is None:
        return True
    try:
        if _stamp(path).read_text() == _checked(path, sha256):
            return True
    except OSError:
        pass
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    if digest.hexdigest() != sha256:
        return False
    _record_check(path, sha256)
    return True


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _checked(path: Path, sha256: str) -> str:
    info = path.stat()
    return f"{sha256} {info.st_size} {info.st_mtime_ns} {info.st_ino}"


def _record_check(path: Path, sha256: str | None) -> None:
    if sha256 is None:
        return
    try:
        _stamp(path).write_text(_checked(path, sha256))
    except OSError:  # a read-only cache: checked again next time
        pass


def check_gguf(path: Path, key: str = "llm.model_path", hint: str = "download the model in GGUF format") -> None:
    """Raise ModelError unless `path` is a readable GGUF file; `hint` says what to do about one that is not."""
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise ModelError(f"{key}: {path} does not exist; point it at a .gguf file") from None
    except OSError as exc:
        raise ModelError(f"{key}: cannot read {path}: {exc.strerror}") from exc
    if magic != GGUF_MAGIC:
        state = "is empty" if not magic else "is not a GGUF file (it does not start with 'GGUF')"
        raise ModelError(f"{key}: {path} {state}; {hint}")


def _content_text(content: str | list) -> str:
    """A message's text: the string itself, or the text parts of a list of content blocks."""
    if isinstance(content, str):
        return content
    return "".join(part if isinstance(part, str) else str(part.get("text") or "") for part in content)


def chat_template(client: Any) -> Any:
    """The GGUF's own chat template as a formatter (with its BOS and EOS token texts), or None when
    the file has none (the packaged Gemma 270M is a base model without one)."""
    template = (client.metadata or {}).get("tokenizer.chat_template")
    if not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def token_text(key: str) -> str:
        token_id = client.metadata.get(key)
        if token_id is None:
            return ""
        return client.detokenize([int(token_id)], special=True).decode("utf-8", errors="replace")

    return Jinja2ChatFormatter(template=template, eos_token=token_text("tokenizer.ggml.eos_token_id"),
                               bos_token=token_text("tokenizer.ggml.bos_token_id"))


def apply_template(template: Any, client: Any, system: str, user: str) -> str:
    """One prompt string in the model's chat template (without the BOS token llama-cpp adds itself)."""
    return apply_messages(template, client, ([{"role": "system", "content": system}] if system else [])
                          + [{"role": "user", "content": user}])


def apply_messages(template: Any, client: Any, messages: list[dict[str, str]]) -> str:
    """A chat (system, user and assistant turns) as one prompt string that ends where the model's reply begins."""
    try:
        prompt = template(messages=messages).prompt
    except Exception:  # some templates refuse a system role: fold it into the first user turn
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [dict(m) for m in messages if m["role"] != "system"]
        if system and turns:
            turns[0]["content"] = f"{system}\n\n{turns[0]['content']}"
        prompt = template(messages=turns).prompt
    bos = template.bos_token
    # llama-cpp adds the BOS token itself when it tokenizes the prompt
    return prompt[len(bos):] if bos and prompt.startswith(bos) else prompt


class _Unsilenced:
    """Stands in for llama-cpp-python's `suppress_stdout_stderr`, which points the process's file
    descriptors 1 and 2 at /dev/null while a model loads: from a background load that swallowed what
    the main thread printed meanwhile (an error, the chat's address), and two loads at once could leave
    them pointing there for good. llama.cpp's lines reach `_native_log` instead."""

    def __init__(self, disable: bool = True) -> None:
        pass

    def __enter__(self) -> "_Unsilenced":
        return self

    def __exit__(self, *_: object) -> None:
        return None


NATIVE_LOG = logging.getLogger("rag_bot.llama_cpp")
_native_callback: Any = None
_route_lock = threading.Lock()


def quiet_native_logs() -> Any:
    """Send llama.cpp's own lines to the `rag_bot.llama_cpp` logger (shown with --verbose) instead of the
    process's stderr, without touching the process's output (once per process; thread-safe)."""
    global _native_callback
    with _route_lock:
        if _native_callback is None:
            try:
                import ctypes

                import llama_cpp
                import llama_cpp._internals
                import llama_cpp.llama
                import llama_cpp.llama_chat_format
            except ImportError:  # without llama-cpp-python there is nothing to load
                return nullcontext()

            def _native_log(level: int, text: bytes, user_data: Any) -> None:
                NATIVE_LOG.debug("%s", text.decode("utf-8", "replace").rstrip("\n"))

            _native_callback = llama_cpp.llama_log_callback(_native_log)  # kept: llama.cpp holds a pointer
            llama_cpp.llama_log_set(_native_callback, ctypes.c_void_p(0))
            for module in (llama_cpp.llama, llama_cpp._internals, llama_cpp.llama_chat_format):
                module.suppress_stdout_stderr = _Unsilenced  # type: ignore[attr-defined]
    return nullcontext()


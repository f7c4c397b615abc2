"""What the two trainers share: the output folder (resumable, refused when it holds other work),
the training arguments, and the report written beside the model."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from .pairs import Pair

REPORT = "rag_bot_training.json"
CHECKPOINTS = "checkpoints"


@dataclass
class TrainSettings:
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 2e-5
    val_fraction: float = 0.1
    seed: int = 0
    progress: bool = True

    def check(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"--epochs: must be 1 or more, not {self.epochs}")
        if self.batch_size < 2:
            raise UsageError(f"--batch-size: must be 2 or more (in-batch negatives need company), not {self.batch_size}")
        if not 0 < self.learning_rate < 1:
            raise UsageError(f"--learning-rate: must be between 0 and 1, not {self.learning_rate}")


@dataclass
class TrainReport:
    kind: str
    base_model: str
    out: str
    fingerprint: str
    train_pairs: int
    validation_queries: int
    settings: dict[str, Any]
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0
    resumed_from: str | None = None
    completed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self) -> None:
        Path(self.out, REPORT).write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    def next_steps(self, folder: str | None = None) -> list[str]:
        """How to use the trained model (`folder`: the collection's folder, for the re-embed command)."""
        out = Path(self.out).resolve()
        if self.kind == "reranker":
            return ["(before: the start model, whose scoring head is untrained unless --base is a cross-encoder)",
                    f"To use it: set `reranker.model: {out}` and `reranker.enabled: true` in your config."]
        return [f"To use it: set `embedding.model: {out}` in your config, then re-embed the store with it (one command;",
                "it also retrains the scope filter for the new model from what the old one was trained on):",
                f"  rag-bot ingest {folder or 'DIR'} --rebuild",
                "To measure it on a BEIR folder: rag-bot eval retrieval --dataset DIR with that config "
                "(it gets its own evaluation collection)."]

    def lines(self) -> list[str]:
        """What `rag-bot train` prints: the run, and the validation figures before and after."""
        lines = [f"{self.kind} trained from {self.base_model} on {self.train_pairs} training rows "
                 f"in {self.train_seconds:.0f} s ({self.steps} steps); saved to {self.out}"]
        if self.before or self.after:
            lines.append(f"validation ({self.validation_queries} held-out queries):")
            for metric in self.after or self.before:
                before, after = self.before.get(metric, "-"), self.after.get(metric, "-")
                lines.append(f"  {metric:<14} before {before:>8}   after {after:>8}")
        return lines


def fingerprint(kind: str, base_model: str, pairs: list[Pair], settings: TrainSettings, **more: Any) -> str:
    """Identifies one training job: the same job may resume in (or be satisfied by) an output folder."""
    digest = hashlib.sha256()
    for value in (kind, base_model, settings.epochs, settings.batch_size, settings.learning_rate,
                  settings.val_fraction, settings.seed, sorted(more.items())):
        digest.update(repr(value).encode())
    for pair in pairs:
        digest.update(json.dumps([pair.query, pair.passage, pair.negative]).encode())
    return digest.hexdigest()[:16]


def prepare_out(out: Path, print_: str, job: str) -> tuple[TrainReport | None, str | None]:
    """(finished report, None) when `out` already holds this job done; (None, checkpoint or None)
    to train (resuming from the checkpoint); refuses a folder holding anything else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder for the trained model")
    report_path = out / REPORT
    if report_path.is_file():
        try:
            stored = json.loads(report_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            stored = {}
        if stored.get("fingerprint") != job:
            raise UsageError(f"--out {out}: holds a model from other pairs or settings ({print_}); "
                             "choose another --out folder or delete this one")
        if stored.get("completed"):
            return TrainReport(**stored), None
    elif out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out}: is not empty and was not made by rag-bot train; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = sorted((out / CHECKPOINTS).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1])) \
        if (out / CHECKPOINTS).is_dir() else []
    usable = [p for p in checkpoints if (p / "trainer_state.json").is_file()]
    return None, str(usable[-1]) if usable else None


def measured_before(out: Path, checkpoint: str | None) -> dict[str, float]:
    """On resume, the "before" figures the interrupted run already measured (same job: same model
    and validation queries), so they are not computed twice."""
    if checkpoint is None:
        return {}
    try:
        return json.loads((Path(out) / REPORT).read_text(encoding="utf-8")).get("before") or {}
    except (OSError, json.JSONDecodeError):
        return {}


def training_arguments(args_class: Any, out: Path, settings: TrainSettings, train_rows: int, bf16: bool,
                       device: str, **extra: Any) -> Any:
    """Arguments for a sentence-transformers trainer: checkpoints twice an epoch (the last one kept),
    so an interrupted job resumes with the same command."""
    steps_per_epoch = max(1, -(-train_rows // settings.batch_size))
    return args_class(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=0.1,
        bf16=bf16,
        use_cpu=device == "cpu",
        save_strategy="steps",
        save_steps=max(1, steps_per_epoch // 2),
        save_total_limit=1,
        logging_steps=max(1, steps_per_epoch // 4),
        report_to="none",
        seed=settings.seed,
        disable_tqdm=not settings.progress,
        dataloader_num_workers=0,
        **extra,
    )


def train_and_save(trainer: Any, model: Any, report: TrainReport, checkpoint: str | None,
                   measure: Callable[[Any], dict[str, float]] | None) -> TrainReport:
    """Train (from `checkpoint` when resuming), save the model into `report.out`, measure it after,
    and mark the report completed (the checkpoints are then removed)."""
    quiet_progress(trainer)
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=checkpoint)
    model.save(report.out)
    if measure is not None:
        report.after = measure(model)
    report.train_seconds = round(time.perf_counter() - started, 1)
    report.steps = int(trainer.state.global_step)
    report.completed = True
    report.save()
    shutil.rmtree(Path(report.out) / CHECKPOINTS, ignore_errors=True)
    return report


def quiet_training_logs() -> None:
    """transformers prints each logged loss as a dict on stdout; the progress bar says enough."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def quiet_progress(trainer: Any) -> None:
    """The trainer's progress bar on stderr with the loss beside it, instead of a dict per log line on stdout."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    class LossBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not args.disable_tqdm:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.4f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LossBar())

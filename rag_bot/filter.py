"""The scope filter: a logistic regression on query embeddings that decides "answer" or "ignore".

It runs before any passage is read or any LLM is called, so out-of-scope questions (small talk,
general knowledge, prompt injection) are declined at once. Trained with scikit-learn, saved as
plain JSON (weights, bias, threshold, the embedding model's name, what it was trained on): no
pickle, safe to share.
The threshold is calibrated on held-out in-scope examples so that at most
`filter.max_false_refusal` of them would be refused.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .config import Config
from .errors import ConfigError, ModelError

log = logging.getLogger(__name__)

LABELS = ("answer", "ignore")
FORMAT = "rag-bot-scope-filter/1"
NEGATIVES_FILE = Path(__file__).resolve().parents[1] / "prompts" / "scope_negatives.txt"


@dataclass
class ScopeFilter:
    """Weights of a trained filter. `score()` is the probability that a query is in scope."""

    embedding_model: str
    weights: list[float]
    bias: float
    threshold: float
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_on: str = ""  # "corpus", or the examples file: what to retrain from when the embedder changes

    def score(self, vectors: Any) -> list[float]:
        import numpy as np

        logits = np.asarray(vectors, dtype="float64") @ np.asarray(self.weights) + self.bias
        return (1.0 / (1.0 + np.exp(-logits))).tolist()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, **asdict(self)}, indent=1), encoding="utf-8")
        tmp.replace(path)  # atomic: a crash never leaves half a filter

    @classmethod
    def load(cls, path: Path) -> "ScopeFilter":
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            if raw.pop("format", None) != FORMAT:
                raise ValueError(f"not a {FORMAT} file")
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: cannot read the scope filter ({exc}); retrain it with `rag-bot train-filter`") from exc


def filter_path(config: Config) -> Path:
    return config.data_dir / "filters" / f"{config.store.collection}.json"


def read_examples(path: Path) -> list[tuple[str, str]]:
    """Labelled rows (`text`, `label` in answer/ignore) from CSV, JSONL or YAML; errors name the row."""
    if not path.is_file():
        raise ConfigError(f"{path}: examples file not found")
    suffix = path.suffix.lower()
    text = path.read_text(encoding="utf-8")
    if suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        numbered = [(i + 2, row) for i, row in enumerate(rows)]  # line 1 is the header
    elif suffix in (".jsonl", ".ndjson"):
        numbered = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    numbered.append((number, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}: line {number}: invalid JSON ({exc.msg})") from exc
    elif suffix in (".yaml", ".yml"):
        import yaml

        loaded = yaml.safe_load(text) or []
        if not isinstance(loaded, list):
            raise ConfigError(f"{path}: expected a list of {{text, label}} rows")
        numbered = [(i + 1, row) for i, row in enumerate(loaded)]
    else:
        raise ConfigError(f"{path}: unknown examples format {suffix!r}; use .csv, .jsonl or .yaml")
    examples = []
    for number, row in numbered:
        where = f"{path}: {'row' if suffix in ('.yaml', '.yml') else 'line'} {number}"
        if not isinstance(row, dict) or not str(row.get("text") or "").strip():
            raise ConfigError(f"{where}: needs a non-empty 'text'")
        label = str(row.get("label") or "").strip().lower()
        if label not in LABELS:
            raise ConfigError(f"{where}: label must be 'answer' or 'ignore', not {row.get('label')!r}")
        examples.append((str(row["text"]).strip(), label))
    _check_balance(examples, str(path))
    return examples


def bundled_negatives(path: Path = NEGATIVES_FILE) -> list[str]:
    """The shipped off-topic, small-talk and prompt-injection messages."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def corpus_examples(chunks: Sequence[str], negatives: Sequence[str], headings: Sequence[str] = (),
                    per_class: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """Examples without labels: sentences and headings of the corpus as in-scope, the bundled
    negatives as out-of-scope. Sentences of 4 to 40 words stand in for questions about them."""
    rng = random.Random(seed)
    sentences = {s.strip(" #*-\t") for chunk in chunks for s in _SENTENCE.split(chunk)}
    candidates = sorted(s for s in sentences if 4 <= len(s.split()) <= 40) + sorted(set(headings))
    wanted = per_class or max(len(negatives), 200)
    if len(candidates) < 20:
        raise ConfigError("the corpus gives too few sentences to train on; ingest more documents, or "
                          "label examples and use --examples FILE")
    rng.shuffle(candidates)
    positives = candidates[:wanted]
    return [(text, "answer") for text in positives] + [(text, "ignore") for text in negatives]


def _check_balance(examples: list[tuple[str, str]], where: str) -> None:
    counts = {label: sum(1 for _, got in examples if got == label) for label in LABELS}
    if min(counts.values()) < 5:
        raise ConfigError(f"{where}: needs at least 5 examples of each label (has {counts})")


def train_filter(examples: list[tuple[str, str]], embeddings: Any, max_false_refusal: float,
                 folds: int = 5, seed: int = 0) -> ScopeFilter:
    """Cross-validate, calibrate the threshold on out-of-fold in-scope scores, then fit on all rows."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, precision_score, recall_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    _check_balance(examples, "training examples")
    texts = [text for text, _ in examples]
    y = np.array([1 if label == "answer" else 0 for _, label in examples])
    x = embeddings.encode(texts)
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
    folds = min(folds, int(min(y.sum(), len(y) - y.sum())))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    held_out = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    threshold = calibrate(held_out[y == 1], max_false_refusal)
    predicted = (held_out >= threshold).astype(int)
    metrics = {
        "examples": {"answer": int(y.sum()), "ignore": int(len(y) - y.sum())},
        "folds": folds,
        "accuracy": float(accuracy_score(y, predicted)),
        "ignore_precision": float(precision_score(y, predicted, pos_label=0, zero_division=0)),
        "ignore_recall": float(recall_score(y, predicted, pos_label=0, zero_division=0)),
        "false_refusal": float(np.mean(held_out[y == 1] < threshold)),
        "accuracy_at_0.5": float(accuracy_score(y, (held_out >= 0.5).astype(int))),
        "threshold": float(threshold),
        "max_false_refusal": max_false_refusal,
    }
    model.fit(x, y)
    return ScopeFilter(embeddings.name, model.coef_[0].tolist(), float(model.intercept_[0]), float(threshold), metrics)


def calibrate(in_scope_scores: Any, max_false_refusal: float) -> float:
    """The highest threshold that refuses at most `max_false_refusal` of the in-scope scores."""
    scores = sorted(float(s) for s in in_scope_scores)
    allowed = math.floor(max_false_refusal * len(scores))  # how many may fall below the threshold
    return scores[allowed] if allowed < len(scores) else scores[-1]


def describe_metrics(metrics: dict[str, Any]) -> str:
    """The training report, a few readable lines."""
    counts = metrics["examples"]
    return "\n".join([
        f"examples:          {counts['answer']} answer, {counts['ignore']} ignore ({metrics['folds']}-fold stratified CV)",
        f"accuracy:          {metrics['accuracy']:.3f} (at the calibrated threshold; {metrics['accuracy_at_0.5']:.3f} at 0.5)",
        f"ignore precision:  {metrics['ignore_precision']:.3f}",
        f"ignore recall:     {metrics['ignore_recall']:.3f}",
        f"threshold:         {metrics['threshold']:.3f} (held-out false refusals {metrics['false_refusal']:.1%}, "
        f"target at most {metrics['max_false_refusal']:.0%})",
    ])

"""Embedding quality on the STS Benchmark: Spearman and Pearson correlation between the cosine
similarity of the two sentences' embeddings and the gold similarity score (0-5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError

SPLITS = ("train", "dev", "test")


@dataclass
class StsPair:
    sentence1: str
    sentence2: str
    score: float


def sts_file(folder: Path, split: str = "test") -> Path:
    if split not in SPLITS:
        raise UsageError(f"--split: {split!r} is not an STS Benchmark split; choose one of {', '.join(SPLITS)}")
    path = Path(folder) / f"sts-{split}.csv"
    if not path.is_file():
        raise InputError(f"{path}: not found; --sts takes the stsbenchmark folder (with sts-{split}.csv)")
    return path


def read_sts(path: Path) -> list[StsPair]:
    """Rows are tab separated; the first 7 fields are genre, file, year, id, score, sentence1, sentence2
    (some rows carry extra fields, which are ignored)."""
    pairs = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                raise InputError(f"{path}: line {number}: expected 7 tab-separated fields, found {len(fields)}")
            try:
                score = float(fields[4])
            except ValueError:
                raise InputError(f"{path}: line {number}: the score {fields[4]!r} is not a number") from None
            pairs.append(StsPair(fields[5], fields[6], score))
    if not pairs:
        raise InputError(f"{path}: no sentence pairs")
    return pairs


def evaluate_sts(embeddings: Any, pairs: list[StsPair], progress: bool = True) -> dict[str, float]:
    """{"pairs", "spearman", "pearson"} for the embedding model on the pairs."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr
    from tqdm import tqdm

    batch = 256
    firsts, seconds = [], []
    for start in tqdm(range(0, len(pairs), batch), desc="encoding", unit="batch", disable=not progress):
        chunk = pairs[start:start + batch]
        firsts.append(embeddings.encode([pair.sentence1 for pair in chunk]))
        seconds.append(embeddings.encode([pair.sentence2 for pair in chunk]))
    cosine = np.sum(np.vstack(firsts) * np.vstack(seconds), axis=1)  # the vectors are normalised
    gold = np.array([pair.score for pair in pairs])
    return {"pairs": len(pairs), "spearman": round(float(spearmanr(cosine, gold).statistic), 4),
            "pearson": round(float(pearsonr(cosine, gold).statistic), 4)}

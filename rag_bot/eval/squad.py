"""SQuAD 2.0 files (the official JSON layout): the articles as documents, the questions with their
gold answers, and SQuAD's own answer normalisation, exact match and token F1.

Each article is written as one markdown file (title as heading, paragraphs as text), so it goes
through the normal ingest pipeline.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

ARTICLES_DIR = "docs"


@dataclass(frozen=True)
class SquadQuestion:
    id: str
    question: str
    article: str  # the markdown file written for its article
    answers: tuple[str, ...]  # empty for an unanswerable question

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def read_squad(path: str | Path) -> tuple[dict[str, str], list[SquadQuestion]]:
    """({file name: markdown text} per article, every question), or one line naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["data"]
        articles: dict[str, str] = {}
        questions = []
        for article in data:
            title = str(article["title"])
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", title) + ".md"
            paragraphs = [p["context"] for p in article["paragraphs"]]
            articles[name] = f"# {title.replace('_', ' ')}\n\n" + "\n\n".join(paragraphs) + "\n"
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = () if qa.get("is_impossible") else tuple(a["text"] for a in qa["answers"])
                    questions.append(SquadQuestion(str(qa["id"]), qa["question"].strip(), name, answers))
    except FileNotFoundError:
        raise InputError(f"{path}: not found; --squad takes a SQuAD 2.0 JSON file (such as dev-v2.0.json)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a SQuAD 2.0 JSON file ({type(exc).__name__}: {exc}); expected "
                         "data[].title, paragraphs[].context and qas[] with question, answers, is_impossible") from None
    return articles, questions


def write_articles(articles: dict[str, str], out: Path) -> Path:
    """The articles as markdown files under `out`; unchanged files are left alone."""
    out.mkdir(parents=True, exist_ok=True)
    for name, text in articles.items():
        path = out / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    return out


def sample_questions(questions: list[SquadQuestion], per_kind: int | None, seed: int = 0) -> list[SquadQuestion]:
    """`per_kind` answerable and `per_kind` unanswerable questions (all when None), seeded."""
    chosen = []
    for answerable in (True, False):
        kind = [q for q in questions if q.answerable == answerable]
        chosen += kind if per_kind is None else random.Random(seed).sample(kind, min(per_kind, len(kind)))
    return chosen


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: tuple[str, ...]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: tuple[str, ...]) -> float:
    """The best token-overlap F1 of the prediction against any gold answer."""
    predicted = normalize_answer(prediction).split()
    best = 0.0
    for answer in answers:
        gold = normalize_answer(answer).split()
        common = sum((Counter(predicted) & Counter(gold)).values())
        if common:
            precision, recall = common / len(predicted), common / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(text: str, answers: tuple[str, ...]) -> bool:
    """Whether a gold answer appears in `text` (both normalised)."""
    normalized = f" {normalize_answer(text)} "
    return any(f" {normalize_answer(a)} " in normalized for a in answers if normalize_answer(a))

"""Training the scope gate for one collection (`rag-bot train-filter`).

`--from-corpus` needs no labels and no LLM: questions generated from the collection's own chunks
(`questions.corpus_questions`, kept only when the chunk they came from is among their nearest
chunks) are "answer", the bundled off-topic and prompt-injection messages (the training part) are
"ignore". The threshold is calibrated on out-of-fold scores of those messages, so that
`filter.target_decline` of them are declined; held-out generated questions, never trained on,
measure how many in-scope questions it would refuse. Generated questions are less specific than
the ones people ask (measured: their lowest scores sit far below real questions'), so they check
the threshold rather than set it.

`--examples FILE` takes labelled rows; the threshold then refuses at most `filter.max_false_refusal`
of the held-out (out-of-fold) "answer" rows, as those are real questions.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from .config import Config
from .errors import InputError, StoreError
from .filter import (FEATURES, NEAREST, ScopeFilter, bundled_negatives, calibrate, calibrate_decline, filter_path,
                     gate_features, read_examples, sentence_similarities)
from .injections import injection_examples, own_questions, task_questions
from .questions import CorpusChunk, corpus_chunks, corpus_phrases, corpus_questions
from .store import check_model, get_collection, nearest_chunks, open_client, store_location
from .store import sample_chunks as store_sample

log = logging.getLogger(__name__)

SAMPLE_CHUNKS = 3000
QUESTIONS = 800
HELD_OUT_SHARE = 0.3  # of the generated questions' chunks, kept out of training
INJECTION_EXAMPLES = 300  # instruction-shaped messages from the templates (`injections`)
INJECTION_FLOOR = 0.5  # the injection check never declines below this probability
INJECTION_MAX_FLAGGED = 0.01  # its threshold flags at most this share of the in-scope questions it is checked on


def fit_filter(config: Config, embeddings: Any, examples: Path | None = None) -> ScopeFilter:
    """Train the gate on the collection (and an examples file when given) and save it."""
    collection = _collection(config)
    if examples is not None:
        scope = train_from_examples(read_examples(examples), collection, embeddings, config)
        scope.trained_on = str(examples.resolve())
    else:
        scope = train_from_corpus(collection, embeddings, config)
        scope.trained_on = "corpus"
    scope.save(filter_path(config))
    return scope


def train_from_corpus(collection: Any, embeddings: Any, config: Config, seed: int = 0) -> ScopeFilter:
    """Generated questions ("answer") against the bundled negatives' training part ("ignore")."""
    chunks = sample_chunks(collection, SAMPLE_CHUNKS, seed)
    questions = corpus_questions(chunks, QUESTIONS, seed)
    vectors = embeddings.encode([q.text for q in questions])
    similarities, _, found = nearest_chunks(collection, vectors, NEAREST)
    kept = [i for i, (q, ids) in enumerate(zip(questions, found)) if q.chunk_id in ids]
    if len(kept) < 20:
        raise InputError("the collection gives too few usable questions to train the scope gate on; ingest more "
                          "documents, or label examples and use --examples FILE")
    held_chunks = _held_out_chunks({questions[i].chunk_id for i in kept}, seed)
    train = [i for i in kept if questions[i].chunk_id not in held_chunks]
    held = [i for i in kept if questions[i].chunk_id in held_chunks]
    negatives = bundled_negatives("train")
    model = _GateData(collection, embeddings, negatives)
    model.add("answer", vectors[train], [similarities[i] for i in train])
    model.add_negatives()
    scope, oof = model.fit(config)
    scope.threshold = calibrate_decline(oof[model.labels == 0], config.filter.target_decline)
    scope.sentence_level = model.sentence_level()
    held_scores = scope.score(gate_features(vectors[held], [similarities[i] for i in held],
                                            model.negative_vectors)) if held else []
    scope.calibrated_on = (f"out-of-fold scores of {int((model.labels == 0).sum())} bundled off-topic messages "
                           f"({config.filter.target_decline:.0%} declined)")
    scope.about = collection_topics(chunks)
    scope.metrics = model.report(scope, oof, held_scores, {"generated": len(questions), "kept": len(kept),
                                                           "train": len(train), "held_out": len(held)})
    scope.metrics["injection"] = fit_injection_check(scope, embeddings, vectors[train], vectors[held],
                                                     corpus_phrases(chunks))
    return scope


def train_from_examples(examples: list[tuple[str, str]], collection: Any, embeddings: Any,
                        config: Config) -> ScopeFilter:
    """Labelled rows; the bundled negatives' training part is added to the "ignore" rows."""
    texts = {label: [text for text, got in examples if got == label] for label in ("answer", "ignore")}
    labelled = set(texts["ignore"])
    negatives = texts["ignore"] + [m for m in bundled_negatives("train") if m not in labelled]
    model = _GateData(collection, embeddings, negatives)
    vectors = embeddings.encode(texts["answer"])
    similarities, _, _ = nearest_chunks(collection, vectors, NEAREST)
    model.add("answer", vectors, similarities)
    model.add_negatives()
    scope, oof = model.fit(config)
    scope.threshold = calibrate(oof[model.labels == 1], config.filter.max_false_refusal)
    scope.sentence_level = model.sentence_level()
    scope.calibrated_on = (f"out-of-fold scores of the {len(texts['answer'])} 'answer' rows "
                           f"(at most {config.filter.max_false_refusal:.0%} refused)")
    chunks = sample_chunks(collection, SAMPLE_CHUNKS, 0)
    scope.about = collection_topics(chunks)
    scope.metrics = model.report(scope, oof, [], {"answer_rows": len(texts["answer"]), "ignore_rows": len(texts["ignore"])})
    scope.metrics["injection"] = fit_injection_check(scope, embeddings, vectors, vectors[:0], corpus_phrases(chunks))
    return scope


def fit_injection_check(scope: ScopeFilter, embeddings: Any, questions: Any, held: Any,
                        phrases: list[str]) -> dict[str, Any]:
    """Train the injection check into `scope`: instruction-shaped messages (the templates and the bundled
    `# [instructions]` lines) against the collection's questions (`questions`, plus how-to questions over
    its key phrases and the other bundled negatives). The threshold flags at most `INJECTION_MAX_FLAGGED`
    of the in-scope questions scored without training on them (out-of-fold, and `held` never trained on),
    and never sits below `INJECTION_FLOOR`. Returns its report for the metrics."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    instructions = injection_examples(INJECTION_EXAMPLES) + bundled_negatives("train", instructions=True)
    others = task_questions(phrases) + own_questions() + bundled_negatives("train", instructions=False)
    x = np.vstack([embeddings.encode(instructions), np.asarray(questions), embeddings.encode(others)])
    labels = np.r_[np.ones(len(instructions)), np.zeros(len(x) - len(instructions))].astype(int)
    in_scope = np.r_[np.zeros(len(instructions)), np.ones(len(questions)), np.zeros(len(others))].astype(bool)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000)
    oof = cross_val_predict(model, x, labels, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            method="predict_proba")[:, 1]
    model.fit(x, labels)
    held_scores = model.predict_proba(np.asarray(held))[:, 1] if len(held) else np.zeros(0)
    checked = np.r_[oof[in_scope], held_scores]
    threshold = max(INJECTION_FLOOR, float(np.quantile(checked, 1 - INJECTION_MAX_FLAGGED)) if len(checked) else 0.0)
    scope.injection_weights = model.coef_[0].tolist()
    scope.injection_bias = float(model.intercept_[0])
    scope.injection_threshold = threshold
    return {"threshold": round(threshold, 4), "instructions": len(instructions), "questions": int(in_scope.sum()),
            "others": len(others), "cv_instructions_flagged": round(float(np.mean(oof[labels == 1] >= threshold)), 4),
            "questions_flagged": round(float(np.mean(checked >= threshold)), 4) if len(checked) else None}



class _GateData:
    """Feature rows and labels for one training run; `fit` cross-validates and fits the gate."""

    def __init__(self, collection: Any, embeddings: Any, negatives: list[str]) -> None:
        import numpy as np

        self.collection, self.embeddings, self.negatives = collection, embeddings, negatives
        self.negative_vectors = embeddings.encode(negatives)
        self.negative_chunks: list[list[str]] = []
        self.columns: dict[str, Any] = {name: np.zeros(0) for name in FEATURES}
        self.labels = np.zeros(0, dtype=int)

    def add(self, label: str, vectors: Any, similarities: Any, leave_out_self: bool = False) -> None:
        import numpy as np

        if len(vectors) == 0:
            return
        features = gate_features(vectors, similarities, self.negative_vectors, leave_out_self)
        self.columns = {name: np.concatenate([self.columns[name], features[name]]) for name in FEATURES}
        self.labels = np.concatenate([self.labels, np.full(len(vectors), int(label == "answer"))])

    def add_negatives(self) -> None:
        similarities, _, self.negative_chunks = nearest_chunks(self.collection, self.negative_vectors, NEAREST)
        self.add("ignore", self.negative_vectors, similarities, leave_out_self=True)

    def sentence_level(self) -> float | None:
        """The second look's level: the highest similarity of any negative to a sentence of its nearest
        chunks. A declined question closer than that to a sentence of the collection is let through."""
        found = sentence_similarities(self.collection, self.embeddings, self.negative_vectors, self.negative_chunks)
        return round(max(found), 4) if found else None

    def fit(self, config: Config) -> tuple[ScopeFilter, Any]:
        """The fitted gate (threshold still unset) and the out-of-fold score of every row."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        counts = Counter(self.labels.tolist())
        if min(counts[0], counts[1]) < 5:
            raise InputError(f"needs at least 5 examples of each label to train the scope gate (has "
                              f"{counts[1]} answer, {counts[0]} ignore)")
        x = np.column_stack([self.columns[name] for name in FEATURES])
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
        z = (x - mean) / scale
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
        folds = StratifiedKFold(n_splits=min(5, counts[0], counts[1]), shuffle=True, random_state=0)
        oof = cross_val_predict(model, z, self.labels, cv=folds, method="predict_proba")[:, 1]
        model.fit(z, self.labels)
        scope = ScopeFilter(config.embedding.model, model.coef_[0].tolist(), float(model.intercept_[0]),
                            mean.tolist(), scale.tolist(), 0.5, list(self.negatives), list(FEATURES))
        return scope, oof

    def report(self, scope: ScopeFilter, oof: Any, held_scores: list[float], counts: dict[str, int]) -> dict[str, Any]:
        import numpy as np

        answer, ignore = oof[self.labels == 1], oof[self.labels == 0]
        metrics = {
            "examples": {"answer": int(len(answer)), "ignore": int(len(ignore))},
            "questions": counts,
            "weights": {name: round(w, 3) for name, w in zip(scope.features, scope.weights)},
            "threshold": round(scope.threshold, 4),
            "calibrated_on": scope.calibrated_on,
            "cv_false_refusal": round(float(np.mean(answer < scope.threshold)), 4),
            "cv_ignore_recall": round(float(np.mean(ignore < scope.threshold)), 4),
        }
        metrics["sentence_level"] = scope.sentence_level
        if len(held_scores):
            metrics["held_out_false_refusal"] = round(float(np.mean(np.asarray(held_scores) < scope.threshold)), 4)
        return metrics


def describe_metrics(metrics: dict[str, Any]) -> str:
    """The training report, a few readable lines."""
    counts = metrics["examples"]
    weights = ", ".join(f"{name} {weight:+.2f}" for name, weight in metrics["weights"].items())
    lines = [
        f"examples:          {counts['answer']} answer, {counts['ignore']} ignore ({metrics['questions']})",
        f"gate weights:      {weights} (standardised features)",
        f"threshold:         {metrics['threshold']:.3f}, calibrated on {metrics['calibrated_on']}",
        f"cross-validated:   {metrics['cv_false_refusal']:.1%} of 'answer' rows refused, "
        f"{metrics['cv_ignore_recall']:.1%} of 'ignore' rows declined",
    ]
    if "held_out_false_refusal" in metrics:
        lines.append(f"held-out:          {metrics['held_out_false_refusal']:.1%} of generated questions never "
                     "trained on would be refused (they are vaguer than real questions)")
    if metrics.get("sentence_level") is not None:
        lines.append(f"second look:       a declined question passes when a sentence of its nearest chunks is at "
                     f"least {metrics['sentence_level']:.3f} similar (the closest any off-topic message came)")
    injection = metrics.get("injection")
    if injection:
        flagged = injection.get("questions_flagged")
        lines.append(f"injection check:   threshold {injection['threshold']:.3f}; cross-validated "
                     f"{injection['cv_instructions_flagged']:.1%} of {injection['instructions']} instruction-shaped "
                     f"messages declined" + (f", {flagged:.1%} of in-scope questions" if flagged is not None else ""))
    return "\n".join(lines)


def sample_chunks(collection: Any, limit: int, seed: int = 0) -> list[CorpusChunk]:
    """Up to `limit` chunks spread over the whole collection, as the question generator reads them."""
    return corpus_chunks(store_sample(collection, limit, seed))


# headings that say nothing of what a document is about (a README's licence, sponsors, changelog)
_BOILERPLATE = re.compile(r"\b(?:licen[cs]es?|sponsors?|contribut\w*|changelog|change log|release notes|"
                          r"acknowledg\w*|credits|copyright|(?:table of )?contents|authors?|funding|merch)\b",
                          re.IGNORECASE)


def collection_topics(chunks: list[CorpusChunk], most: int = 6) -> list[str]:
    """What the collection is about, for decline messages: its most frequent files and, for each, the
    headings with most text (not its licence, sponsors, changelog and the like)."""
    sources = Counter(chunk.source for chunk in chunks if chunk.source)
    topics = []
    for source, _ in sources.most_common(most):
        last = (chunk.heading.split(" > ")[-1] for chunk in chunks if chunk.source == source and chunk.heading)
        headings = Counter(heading for heading in last if not _BOILERPLATE.search(heading))
        top = [heading for heading, _ in headings.most_common(2)]
        topics.append(f"{source} ({', '.join(top)})" if top else source)
    return topics


def usable_filter(config: Config) -> bool:
    """Whether the collection's scope gate can be loaded as it is (a missing or older one needs training)."""
    from .errors import RagBotError

    try:
        ScopeFilter.load(filter_path(config))
        return True
    except RagBotError:
        return False


def refresh_filter(config: Config, embeddings: Any, corpus_changed: bool = False) -> dict | None:
    """After the store was re-embedded with another model, retrain a scope filter trained for the
    old one from what it was trained on (the corpus, or its examples file), so that switching the
    embedder is one command: `ingest DIR --rebuild`. With `corpus_changed` (a watched folder, an
    upload or a delete changed the documents), a filter trained from the corpus is retrained too:
    its questions come from the documents, so new topics must not be declined."""
    from .errors import RagBotError

    path = filter_path(config)
    if not path.exists():
        return None
    try:
        old = ScopeFilter.load(path)
    except RagBotError:
        return None  # a damaged or older file: the retriever names it and says how to retrain
    corpus = old.trained_on == "corpus"
    if old.embedding_model == config.embedding.model:
        if not (corpus_changed and corpus and config.filter.enabled):
            return None
        scope = fit_filter(config, embeddings)
        return {"retrained": True, "path": str(path), "trained_on": "corpus", "threshold": round(scope.threshold, 4),
                "message": f"scope filter: retrained from the changed corpus (threshold {scope.threshold:.3f})"}
    examples = Path(old.trained_on) if old.trained_on and not corpus else None
    if not config.filter.enabled or not (corpus or (examples and examples.is_file())):
        hint = f"--examples {examples}" if examples else "--from-corpus (or --examples FILE)"
        return {"retrained": False, "path": str(path),
                "message": f"scope filter: {path} was trained for {old.embedding_model!r}; "
                           f"retrain it for this model with `rag-bot train-filter {hint}`"}
    scope = fit_filter(config, embeddings, examples)
    return {"retrained": True, "path": str(path), "trained_on": scope.trained_on,
            "threshold": round(scope.threshold, 4),
            "message": f"scope filter: retrained for {config.embedding.model!r} from "
                       f"{'the corpus' if examples is None else examples} (threshold {scope.threshold:.3f}); "
                       f"saved {path}"}


def _collection(config: Config) -> Any:
    collection = get_collection(open_client(config), config.store.collection)
    if collection is None or collection.count() == 0:
        raise StoreError(f"store.collection: no documents in {config.store.collection!r} at {store_location(config)}; "
                          "the scope gate learns from the collection: run `rag-bot ingest DIR` first")
    check_model(collection, config.embedding.model, what="train the filter")
    return collection


def _held_out_chunks(chunk_ids: set[str], seed: int) -> set[str]:
    ordered = sorted(chunk_ids)
    random.Random(seed).shuffle(ordered)
    return set(ordered[: max(1, round(HELD_OUT_SHARE * len(ordered)))])

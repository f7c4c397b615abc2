"""Train a cross-encoder reranker on (query, passage) pairs with hard negatives mined by the current
retriever from the ingested collection, through sentence-transformers' CrossEncoder trainer.

The loss is listwise: for each query the model must pick its positive chunk out of the hard
negatives and a few in-batch negatives (other queries' positives), a softmax over the scores
(MultipleNegativesRankingLoss). On SciFact it learned faster than binary cross-entropy on the same
labelled pairs (see BENCHMARKS.md). Reranking metrics on held-out queries before and after, over the
candidates the retriever really returns."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..hub import resolve_model_path
from ..models import pick_device, precision_context, quiet_transformers, use_bf16
from .pairs import Pair, split_pairs
from .run import (TrainReport, TrainSettings, fingerprint, measured_before, prepare_out, quiet_training_logs,
                  train_and_save, training_arguments)

log = logging.getLogger(__name__)
MAX_LENGTH = 256  # query + one chunk (chunks are at most chunking.size tokens of the same tokenizer)
IN_BATCH_NEGATIVES = 3  # other queries' positives scored against each query, beside its hard negatives


@dataclass
class Mined:
    """One query: its positive texts (chunks of its passages where the retriever found them) and
    the retriever's candidates in order, each marked positive or not."""

    query: str
    positives: list[str]
    candidates: list[tuple[str, bool]] = field(default_factory=list)
    negatives: list[str] = field(default_factory=list)  # given in the pair file


def _flat(text: str) -> str:
    return " ".join(text.split())


def is_part_of(chunk: str, passage: str) -> bool:
    """A chunk belongs to a positive passage when one contains the other (whitespace aside)."""
    chunk, passage = _flat(chunk), _flat(passage)
    return bool(chunk) and (chunk in passage or passage in chunk)


def mine(pairs: list[Pair], retriever: Any, progress: bool = True) -> list[Mined]:
    """For each distinct query: the retriever's candidates, with the chunks of its passages marked."""
    from tqdm import tqdm

    by_query: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_query.setdefault(pair.query, []).append(pair)
    mined = []
    for query, group in tqdm(by_query.items(), desc="mining negatives", unit="query", disable=not progress):
        passages = [pair.passage for pair in group]
        docs = retriever.candidates(query)
        marked = [(doc.page_content, any(is_part_of(doc.page_content, p) for p in passages)) for doc in docs]
        positives = []
        for passage in passages:  # each passage's best-ranked chunk, else the passage itself
            found = next((text for text, _ in marked if is_part_of(text, passage)), passage)
            if found not in positives:
                positives.append(found)
        mined.append(Mined(query, positives, marked, [p.negative for p in group if p.negative]))
    return mined


def ranking_rows(mined: list[Mined], negatives: int) -> tuple[dict[str, list], int]:
    """One row per (query, positive): the query, the positive, and `negatives` negatives (the pair
    file's own first, then the retriever's best-ranked non-positive candidates). Queries with fewer
    negatives than that are left out; their count is returned."""
    columns: dict[str, list] = {"query": [], "positive": [], **{f"negative_{n}": [] for n in range(1, negatives + 1)}}
    short = 0
    for item in mined:
        hard = list(dict.fromkeys(item.negatives + [text for text, positive in item.candidates if not positive]))
        if len(hard) < negatives:
            short += 1
            continue
        for text in item.positives:
            columns["query"].append(item.query)
            columns["positive"].append(text)
            for n in range(1, negatives + 1):
                columns[f"negative_{n}"].append(hard[n - 1])
    return columns, short


def reranking_evaluator(mined: list[Mined], name: str = "validation") -> Any:
    """Reranking of the retriever's candidates as they come (positives not retrieved stay missing:
    the realistic setting). Whether reranking beats the retriever's own order is for `rag-bot eval
    retrieval` with and without `+rerank`; the evaluator's `base_*` figures normalise differently."""
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator

    samples: list[dict[str, Any]] = [{"query": m.query, "positive": [t for t, positive in m.candidates if positive],
                "documents": [t for t, _ in m.candidates]} for m in mined if m.candidates]
    return CrossEncoderRerankingEvaluator(samples, at_k=10, always_rerank_positives=False, name=name,
                                          batch_size=64, write_csv=False)


def evaluate(evaluator: Any, model: Any, device: str) -> dict[str, float]:
    with precision_context(device, "auto"):
        raw = evaluator(model)
    prefix = f"{evaluator.name}_" if evaluator.name else ""
    return {key: round(float(raw[prefix + key]), 4) for key in ("ndcg@10", "mrr@10", "map")}


def mining_figures(mined: list[Mined], short: int) -> dict[str, int]:
    """What the report says of the mined training queries."""
    return {"train_queries": len(mined),
            "train_queries_with_a_positive_among_candidates": sum(any(p for _, p in m.candidates) for m in mined),
            "train_queries_left_out_for_too_few_negatives": short}


def train_reranker(pairs: list[Pair], retriever: Any, out: str | Path, settings: TrainSettings, *,
                   base_model: str, negatives: int = 4, device: str = "cpu", source: str = "") -> TrainReport:
    """Train a cross-encoder from `base_model` into `out`; resumes an interrupted run of the same job."""
    settings.check()
    if negatives < 1:
        raise UsageError(f"--negatives: must be 1 or more, not {negatives}")
    out = Path(out)
    base = resolve_model_path(base_model, "--base")
    if Path(base).resolve() == out.resolve():
        raise UsageError(f"--out {out}: is the model being trained; choose another folder")
    train, validation = split_pairs(pairs, settings.val_fraction, settings.seed)
    collection = retriever.config.store.collection
    job = fingerprint("reranker", base_model, pairs, settings, negatives=negatives, collection=collection,
                      embedder=retriever.config.embedding.model, loss="MultipleNegativesRankingLoss")
    done, checkpoint = prepare_out(out, source or "pairs", job)
    if done is not None:
        return done

    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    quiet_training_logs()
    device = pick_device(device)
    mined_train = mine(train, retriever, settings.progress)
    mined_validation = mine(validation, retriever, settings.progress) if validation else []
    rows, short = ranking_rows(mined_train, negatives)
    if not rows["query"]:
        raise UsageError(f"--negatives {negatives}: no training query has that many candidates besides its "
                         "positives; ingest more documents or lower --negatives")
    with quiet_transformers():
        model = CrossEncoder(base, num_labels=1, max_length=MAX_LENGTH, device=device)
    report = TrainReport("reranker", base_model, str(out), job, len(rows["query"]), len(mined_validation),
                         {**vars(settings), "negatives": negatives, "in_batch_negatives": IN_BATCH_NEGATIVES,
                          "loss": "MultipleNegativesRankingLoss"}, resumed_from=checkpoint,
                         extra={"pairs": source, "collection": collection, **mining_figures(mined_train, short)})
    evaluator = reranking_evaluator(mined_validation) if mined_validation else None
    if evaluator is not None:
        report.before = measured_before(out, checkpoint) or evaluate(evaluator, model, device)
    report.save()

    arguments = training_arguments(CrossEncoderTrainingArguments, out, settings, len(rows["query"]),
                                   use_bf16(device, "auto"), device, batch_sampler=BatchSamplers.NO_DUPLICATES)
    trainer = CrossEncoderTrainer(model=model, args=arguments, train_dataset=Dataset.from_dict(rows),
                                  loss=MultipleNegativesRankingLoss(model, num_negatives=IN_BATCH_NEGATIVES))
    return train_and_save(trainer, model, report, checkpoint,
                          (lambda trained: evaluate(evaluator, trained, device)) if evaluator is not None else None)

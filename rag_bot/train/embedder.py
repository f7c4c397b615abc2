"""Fine-tune the bi-encoder on (query, passage) pairs: MultipleNegativesRankingLoss (every other
passage in the batch is a negative for a query, plus the pair's own `negative` when every pair has
one), through sentence-transformers' trainer. Retrieval metrics on held-out queries before and after."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..config import EmbeddingConfig
from ..errors import UsageError
from ..hub import resolve_model_path
from ..models import pick_device, precision_context, quiet_transformers, use_bf16
from .pairs import Pair, split_pairs
from .run import (TrainReport, TrainSettings, fingerprint, measured_before, prepare_out, quiet_training_logs,
                  train_and_save, training_arguments)

log = logging.getLogger(__name__)


def retrieval_evaluator(validation: list[Pair], corpus: dict[str, str] | None, progress: bool, name: str = "validation") -> Any:
    """Held-out queries against a corpus of every passage (plus `corpus`, e.g. a whole BEIR corpus)."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    passages: dict[str, Any] = dict(corpus or {})  # (the evaluator's own, wider value type)
    by_text = {text: doc_id for doc_id, text in passages.items()}
    queries: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    for pair in validation:
        query_id = queries.setdefault(pair.query, f"q{len(queries)}")
        doc_id = by_text.get(pair.passage)
        if doc_id is None:
            doc_id = by_text[pair.passage] = f"p{len(passages)}"
            passages[doc_id] = pair.passage
        relevant.setdefault(query_id, set()).add(doc_id)
    return InformationRetrievalEvaluator(
        queries={query_id: text for text, query_id in queries.items()}, corpus=passages, relevant_docs=relevant,
        mrr_at_k=[10], ndcg_at_k=[10], accuracy_at_k=[1, 10], precision_recall_at_k=[10, 100], map_at_k=[100],
        show_progress_bar=progress, batch_size=64, name=name, write_csv=False)


def evaluate(evaluator: Any, model: Any, config: EmbeddingConfig) -> dict[str, float]:
    with precision_context(config.device, config.precision):
        raw = evaluator(model)
    wanted = {"ndcg@10": "cosine_ndcg@10", "mrr@10": "cosine_mrr@10", "recall@10": "cosine_recall@10",
              "recall@100": "cosine_recall@100"}
    prefix = f"{evaluator.name}_" if evaluator.name else ""
    return {key: round(float(raw[prefix + name]), 4) for key, name in wanted.items()}


def train_embedder(pairs: list[Pair], config: EmbeddingConfig, out: str | Path, settings: TrainSettings,
                   corpus: dict[str, str] | None = None, source: str = "") -> TrainReport:
    """Fine-tune `config.model` on `pairs` into `out`; resumes an interrupted run of the same job."""
    settings.check()
    out = Path(out)
    base = resolve_model_path(config.model, "embedding.model")
    if Path(base).resolve() == out.resolve():
        raise UsageError(f"--out {out}: is the model being trained; choose another folder")
    triplets = all(pair.negative for pair in pairs)
    if not triplets and any(pair.negative for pair in pairs):
        log.warning("some pairs have a negative and some do not: training on (query, passage) only")
    train, validation = split_pairs(pairs, settings.val_fraction, settings.seed)
    job = fingerprint("embedder", config.model, pairs, settings, triplets=triplets)
    done, checkpoint = prepare_out(out, source or "pairs", job)
    if done is not None:
        return done

    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    quiet_training_logs()
    device = pick_device(config.device)
    with quiet_transformers():
        model = SentenceTransformer(base, device=device)
    report = TrainReport("embedder", config.model, str(out), job, len(train), len({p.query for p in validation}),
                         {**vars(settings), "loss": "MultipleNegativesRankingLoss", "hard_negatives": triplets},
                         resumed_from=checkpoint, extra={"pairs": source})
    evaluator = retrieval_evaluator(validation, corpus, settings.progress) if validation else None
    if evaluator is not None:
        report.before = measured_before(out, checkpoint) or evaluate(evaluator, model, config)
    report.save()

    columns = {"anchor": [p.query for p in train], "positive": [p.passage for p in train]}
    if triplets:
        columns["negative"] = [p.negative or "" for p in train]  # every pair has one when triplets
    arguments = training_arguments(SentenceTransformerTrainingArguments, out, settings, len(train),
                                   use_bf16(config.device, config.precision), device,
                                   batch_sampler=BatchSamplers.NO_DUPLICATES)
    trainer = SentenceTransformerTrainer(model=model, args=arguments, train_dataset=Dataset.from_dict(columns),
                                         loss=MultipleNegativesRankingLoss(model))
    return train_and_save(trainer, model, report, checkpoint,
                          (lambda trained: evaluate(evaluator, trained, config)) if evaluator is not None else None)

"""Retrieval quality of each pipeline on a BEIR dataset ingested into its own collection.

Pipelines: `dense` (top-k cosine similarity), `mmr` (the configured `retriever.k` / `fetch_k` /
`lambda_mult`), `bm25`, `hybrid` (dense and BM25 fused by reciprocal rank), each optionally with
`+rerank` (the cross-encoder reorders the first `retriever.k` candidates) and `+filter` (questions
the scope filter declines get no results). Chunks are ranked and each document counts once, at its
best rank. The metrics come from pytrec_eval (trec_eval's own code), averaged over every judged
query (a declined query scores 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from langchain_core.documents import Document

from ..errors import UsageError
from .beir import BeirDataset, doc_id

BASES = ("dense", "mmr", "bm25", "hybrid")
MODIFIERS = ("rerank", "filter")
METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
DEPTH = 100  # documents ranked per query (Recall@100)
CHUNK_DEPTH = 300  # chunks fetched to fill DEPTH documents


@dataclass(frozen=True)
class Pipeline:
    base: str
    rerank: bool = False
    filter: bool = False

    @property
    def name(self) -> str:
        return self.base + ("+rerank" if self.rerank else "") + ("+filter" if self.filter else "")


def parse_pipelines(text: str) -> list[Pipeline]:
    """`dense,bm25,hybrid+rerank` -> pipelines; an unknown name is one clear line."""
    pipelines = []
    for name in (part.strip() for part in text.split(",") if part.strip()):
        base, *modifiers = name.split("+")
        unknown = [m for m in modifiers if m not in MODIFIERS]
        if base not in BASES or unknown:
            raise UsageError(f"--pipelines: unknown pipeline {name!r}; use {', '.join(BASES)}, "
                             f"optionally with {', '.join('+' + m for m in MODIFIERS)}")
        pipelines.append(Pipeline(base, "rerank" in modifiers, "filter" in modifiers))
    if not pipelines:
        raise UsageError("--pipelines: name at least one pipeline")
    return pipelines


def documents_in_order(sources: list[str], depth: int = DEPTH) -> list[str]:
    """BEIR ids in order of each document's best-ranked chunk."""
    seen: dict[str, None] = {}
    for source in sources:
        seen.setdefault(doc_id(source), None)
        if len(seen) >= depth:
            break
    return list(seen)


def score(qrels: dict[str, dict[str, int]], run: dict[str, list[str]]) -> dict[str, float]:
    """nDCG@10, Recall@10, Recall@100 and MRR@10 of ranked document ids, averaged over all judged queries."""
    import pytrec_eval

    def as_scores(ranking: list[str]) -> dict[str, float]:
        return {doc: float(len(ranking) - rank) for rank, doc in enumerate(ranking)}  # strictly decreasing

    judged = {query: run.get(query, []) for query in qrels}
    full = {query: as_scores(ranking) for query, ranking in judged.items() if ranking}
    top10 = {query: as_scores(ranking[:10]) for query, ranking in judged.items() if ranking}
    deep = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"}).evaluate(full)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    totals = dict.fromkeys(METRICS, 0.0)
    for query, figures in deep.items():
        totals["ndcg@10"] += figures["ndcg_cut_10"]
        totals["recall@10"] += figures["recall_10"]
        totals["recall@100"] += figures["recall_100"]
        totals["mrr@10"] += rr[query]["recip_rank"]
    return {metric: round(total / len(qrels), 4) for metric, total in totals.items()}


class RetrievalEvaluator:
    """Runs pipelines over the dataset's queries with one retriever's models and store."""

    def __init__(self, retriever: Any, dataset: BeirDataset, progress: bool = True) -> None:
        self.retriever = retriever
        self.dataset = dataset
        self.progress = progress
        self.query_ids = list(dataset.queries)
        texts = [dataset.queries[q] for q in self.query_ids]
        self.vectors = retriever.embeddings.encode(texts).tolist()
        self._dense: list[list[Document]] | None = None

    def evaluate(self, pipeline: Pipeline) -> dict[str, float]:
        return score(self.dataset.qrels, self.run(pipeline))

    def run(self, pipeline: Pipeline) -> dict[str, list[str]]:
        from tqdm import tqdm

        if pipeline.rerank and self.retriever.reranker is None:
            raise UsageError(f"{pipeline.name}: no cross-encoder; set reranker.enabled: true and reranker.model")
        if pipeline.filter and self.retriever.scope is None:
            raise UsageError(f"{pipeline.name}: no scope filter for this collection; train one first")
        candidates = self._candidates(pipeline.base)
        run: dict[str, list[str]] = {}
        items = tqdm(list(enumerate(self.query_ids)), desc=pipeline.name, unit="query", disable=not self.progress,
                     leave=False)
        for i, query_id in items:
            if pipeline.filter and self.retriever.check_scope(self.vectors[i], self.dataset.queries[query_id]).declined:
                continue
            docs = candidates(i)
            if pipeline.rerank:
                head = self.retriever.config.retriever.k
                docs = self.retriever.rerank(self.dataset.queries[query_id], docs[:head], head) + docs[head:]
            run[query_id] = documents_in_order([d.metadata.get("source", "") for d in docs])
        return run

    def _candidates(self, base: str) -> Callable[[int], list[Document]]:
        retriever = self.retriever
        deep = retriever.config.model_copy(update={"retriever": retriever.config.retriever.model_copy(
            update={"k": CHUNK_DEPTH, "fetch_k": max(CHUNK_DEPTH, retriever.config.retriever.fetch_k)})})
        if base == "dense":
            dense = self._dense_all()
            return lambda i: list(dense[i])
        if base == "mmr":
            return lambda i: retriever.mmr(self.vectors[i])
        if retriever.bm25 is None:
            raise UsageError(f"{base}: no BM25 index for this collection")
        wide = retriever.model_copy(update={"config": deep})  # ranks CHUNK_DEPTH chunks
        if base == "bm25":
            return lambda i: wide.keyword(self.dataset.queries[self.query_ids[i]])
        dense = self._dense_all()
        return lambda i: wide.fuse(list(dense[i]), wide.keyword(self.dataset.queries[self.query_ids[i]]))

    def _dense_all(self) -> list[list[Document]]:
        """Top CHUNK_DEPTH chunks by cosine similarity for every query, in batched Chroma queries
        (small batches: Chroma reads the results back with one SQL variable per chunk)."""
        if self._dense is None:
            collection = self.retriever.collection
            self._dense = []
            for start in range(0, len(self.vectors), 16):
                got = collection.query(query_embeddings=self.vectors[start:start + 16], n_results=CHUNK_DEPTH,
                                       include=["documents", "metadatas"])
                self._dense += [
                    [Document(page_content=text, metadata=meta or {}, id=chunk_id)
                     for chunk_id, text, meta in zip(ids, texts, metas)]
                    for ids, texts, metas in zip(got["ids"], got["documents"], got["metadatas"])
                ]
        return self._dense

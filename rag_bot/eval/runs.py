"""The evaluation commands as library calls: each ingests its dataset into a collection of its own
(incrementally, so a second run only reads), trains what the configured pipeline needs, measures,
and returns the figures as a dict for the CLI to print.

The ingest job is passed in (`ingest=ingest.pipeline.run_ingest`): the runtime package never
imports the batch job, the CLI wires the two together.

    from ingest.pipeline import run_ingest
    figures = run_answers(load_config(), "dev-subset.json", sample=40, ingest=run_ingest)
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Callable, Protocol

from ..config import PACKAGED_EMBEDDER, Config
from ..errors import UsageError
from .retrieval import Pipeline

log = logging.getLogger(__name__)


class IngestReport(Protocol):
    chunks_total: int


Ingest = Callable[..., IngestReport]  # run_ingest(config, folder, *, progress, embeddings)


def eval_config(config: Config, name: str, pipelines: list[Pipeline], chunk_size: int | None = None,
                chunk_overlap: int | None = None) -> Config:
    """The config for an evaluation collection: its own collection per dataset, chunking and model,
    with the stages the pipelines need (hybrid, reranker, filter) switched on."""
    from pydantic import ValidationError

    update = {key: value for key, value in (("size", chunk_size), ("overlap", chunk_overlap)) if value is not None}
    try:
        chunking = type(config.chunking).model_validate({**config.chunking.model_dump(), **update})
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"--chunk-size/--chunk-overlap: {problem}") from exc
    collection = re.sub(r"[^A-Za-z0-9._-]", "-", f"eval-{name}-c{chunking.size}-o{chunking.overlap}"
                        f"{'-ctx' if chunking.context_header else ''}{model_tag(config.embedding.model)}")
    return config.model_copy(update={
        "chunking": chunking,
        "store": config.store.model_copy(update={"collection": collection}),
        "retriever": config.retriever.model_copy(update={"hybrid": any(p.base in ("bm25", "hybrid") for p in pipelines)}),
        "reranker": config.reranker.model_copy(update={"enabled": any(p.rerank for p in pipelines)}),
        "filter": config.filter.model_copy(update={"enabled": any(p.filter for p in pipelines)}),
    })


def ingest_owned(ingest: Ingest, config: Config, folder: str | Path, **options: Any) -> IngestReport:
    """Ingest `folder` into its evaluation collection. Evaluation collections hold only copies that the
    evaluation writes itself, so one that mirrors another folder (the repository moved, or another
    checkout shares the data folder) is rebuilt, with one line saying so, instead of refused."""
    from ..store import META_FOLDER, get_collection, open_client

    root = str(Path(folder).expanduser().resolve())
    existing = get_collection(open_client(config), config.store.collection)
    mirrored = (existing.metadata or {}).get(META_FOLDER) if existing is not None else None
    rebuild = mirrored is not None and mirrored != root
    if rebuild:
        log.warning("evaluation collection %r mirrored %s; rebuilding it from %s", config.store.collection,
                    mirrored, root)
    return ingest(config, folder, rebuild=rebuild, **options)


def model_tag(model: str) -> str:
    """'' for the packaged embedder, else a short tag of the model and its weights' time: a
    fine-tuned model gets its own evaluation collection (and a retrained one a fresh one)."""
    if model == PACKAGED_EMBEDDER:
        return ""
    weights = [p.stat().st_mtime_ns for p in sorted(Path(model).glob("*.safetensors"))] if Path(model).is_dir() else []
    return "-m" + hashlib.sha1(repr((model, weights)).encode()).hexdigest()[:8]


def default_pipelines(config: Config) -> str:
    """`eval retrieval`'s pipelines when none are named: the four bases, plus the configured stages."""
    from ..models import reranker_wanted

    return "dense,mmr,bm25,hybrid" + (",dense+rerank,hybrid+rerank" if reranker_wanted(config.reranker) else "") + \
        (",dense+filter" if config.filter.enabled else "")


def beir_store(config: Config, folder: str | Path, *, ingest: Ingest, embeddings: Any,
               say: Callable[[str], Any] | None = None, pipelines: list[Pipeline] | None = None,
               chunk_size: int | None = None, chunk_overlap: int | None = None) -> Config:
    """A BEIR corpus ingested into its evaluation collection; returns the config for it (by default
    the configured hybrid setting, no reranker, no filter). `say` gets one line about what is there;
    without it, progress bars are off too."""
    from .beir import corpus_file, write_corpus

    corpus_file(Path(folder))
    name = Path(folder).resolve().name
    pipelines = pipelines or [Pipeline("hybrid" if config.retriever.hybrid else "mmr")]
    config = eval_config(config, name, pipelines, chunk_size, chunk_overlap)
    docs = config.data_dir / "eval" / name / "docs"
    count = write_corpus(Path(folder), docs)
    report = ingest_owned(ingest, config, docs, progress=None if say else False, embeddings=embeddings)
    if say:
        say(f"{name}: {count} documents -> {report.chunks_total} chunks in collection {config.store.collection!r}")
    return config


def run_retrieval(config: Config, dataset_folder: str | Path, *, split: str = "test", pipelines: str | None = None,
                  chunk_size: int | None = None, chunk_overlap: int | None = None, ingest: Ingest,
                  say: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """`rag-bot eval retrieval`: nDCG@10, recall and MRR of each pipeline on a BEIR dataset."""
    from ..filter_training import fit_filter, usable_filter
    from ..models import LocalEmbeddings
    from ..retriever import load_retriever
    from .beir import load_beir
    from .retrieval import RetrievalEvaluator, parse_pipelines

    dataset = load_beir(dataset_folder, split)
    chosen = parse_pipelines(pipelines or default_pipelines(config))
    embeddings = LocalEmbeddings(config.embedding)
    config = beir_store(config, dataset.folder, ingest=ingest, embeddings=embeddings, say=say, pipelines=chosen,
                        chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    if say:
        say(f"{dataset.name}: {len(dataset.queries)} {split} queries")
    if any(p.filter for p in chosen) and not usable_filter(config):
        fit_filter(config, embeddings)
    evaluator = RetrievalEvaluator(load_retriever(config, embeddings=embeddings), dataset, progress=say is not None)
    return {"dataset": dataset.name, "split": split, "queries": len(dataset.queries),
            "chunking": {"size": config.chunking.size, "overlap": config.chunking.overlap},
            "pipelines": {pipeline.name: evaluator.evaluate(pipeline) for pipeline in chosen}}


def run_scope(config: Config, data: str | Path, *, ingest: Ingest, quiet: bool = False) -> dict[str, Any]:
    """`rag-bot eval scope`: false refusals and out-of-scope recall of each collection's own gate."""
    from ..filter_training import fit_filter
    from ..models import LocalEmbeddings
    from ..retriever import load_retriever
    from .scope import evaluate_gate, out_of_scope_sets, scope_collections

    off_topic = out_of_scope_sets(Path(data))
    embeddings = LocalEmbeddings(config.embedding)
    results: dict[str, Any] = {"collections": {}}
    for collection in scope_collections(Path(data), config.data_dir / "eval"):
        config_for = eval_config(config, collection.name, [Pipeline("dense", filter=True)])
        ingest_owned(ingest, config_for, collection.folder, progress=False if quiet else None, embeddings=embeddings)
        scope = fit_filter(config_for, embeddings)
        retriever = load_retriever(config_for, embeddings=embeddings)
        results["collections"][collection.name] = {
            "threshold": scope.threshold, "calibrated_on": scope.calibrated_on, "training": scope.metrics,
            "fair_sets": sorted(collection.fair),
            "sets": {**evaluate_gate(retriever, collection.in_scope, True), **evaluate_gate(retriever, collection.fair, True),
                     **evaluate_gate(retriever, off_topic, False)}}
    return results


def squad_chain(config: Config, squad_file: str | Path, mode: str, *, ingest: Ingest,
                quiet: bool = False) -> tuple[Any, Config, list[Any]]:
    """The SQuAD articles as a collection of their own (one markdown file each), its scope gate trained as
    `make run` does, and the chain over it in answer mode `mode`; with its configuration and the file's
    questions."""
    from ..chain import load_chain
    from ..filter_training import fit_filter
    from ..models import LocalEmbeddings, reranker_wanted
    from ..retriever import load_retriever
    from .squad import read_squad, write_articles

    articles, questions = read_squad(squad_file)
    name = "squad-" + Path(squad_file).stem
    base = Pipeline("hybrid" if config.retriever.hybrid else "mmr", rerank=reranker_wanted(config.reranker), filter=True)
    config_for = eval_config(config, name, [base])
    config_for = config_for.model_copy(update={"chat": config_for.chat.model_copy(update={"answer_mode": mode})})
    embeddings = LocalEmbeddings(config.embedding)
    folder = write_articles(articles, config.data_dir / "eval" / name / "docs")
    ingest_owned(ingest, config_for, folder, progress=False if quiet else None, embeddings=embeddings)
    fit_filter(config_for, embeddings)  # as `make run` does: from the corpus, no labels
    return load_chain(config_for, retriever=load_retriever(config_for, embeddings=embeddings)), config_for, questions


def run_answers(config: Config, squad_file: str | Path, *, sample: int = 40, seed: int = 0, llm: bool = True,
                ingest: Ingest, quiet: bool = False) -> dict[str, Any]:
    """`rag-bot eval answers`: SQuAD 2.0 questions through the whole chain, per answer mode."""
    from .answers import ask_all, summarize
    from .squad import sample_questions

    if sample < 0:
        raise UsageError("--sample: must be 0 (all) or more")
    mode = "generate" if llm else "extract"
    chain, config_for, questions = squad_chain(config, squad_file, mode, ingest=ingest, quiet=quiet)
    records = ask_all(chain, sample_questions(questions, sample or None, seed), progress=not quiet)
    figures = summarize(records, ("generate", "auto", "extract") if llm else ("extract",),
                        level=config_for.chat.judge_level if config_for.chat.judge_model else None)
    figures["config"] = {"answer_mode_run": mode, "min_evidence": config_for.chat.min_evidence,
                         "reranker": config_for.reranker.enabled, "reranker_model": config_for.reranker.model,
                         "hybrid": config_for.retriever.hybrid, "judge_model": config_for.chat.judge_model,
                         "judge_level": config_for.chat.judge_level}
    return figures


def run_conversations(config: Config, data: str | Path, *, domains: list[str] | None = None, limit: int = 0,
                      ingest: Ingest, quiet: bool = False) -> dict[str, Any]:
    """`rag-bot eval conversations`: MTRAG conversations through the chain as configured (answer mode, LLM,
    judge), each domain's passages in a collection of their own with its gate trained from the corpus;
    `limit` conversations per domain (0: all)."""
    from tqdm import tqdm

    from ..chain import load_chain
    from ..filter_training import fit_filter
    from ..models import LocalEmbeddings, reranker_wanted
    from ..retriever import load_retriever
    from .conversations import ask_conversation, read_conversations, summarize, write_passages

    if limit < 0:
        raise UsageError("--limit: must be 0 (all) or more")
    conversations = read_conversations(data, domains)
    embeddings = LocalEmbeddings(config.embedding)
    results: dict[str, Any] = {"config": {"answer_mode": config.chat.answer_mode, "llm": config.llm.model_path,
                                          "judge_model": config.chat.judge_model, "limit": limit}, "domains": {}}
    llm: Any = None
    judge: Any = "config"  # loaded with the first chain, then shared
    for domain in sorted({c.domain for c in conversations}):
        chosen = [c for c in conversations if c.domain == domain]
        base = Pipeline("hybrid" if config.retriever.hybrid else "mmr", rerank=reranker_wanted(config.reranker), filter=True)
        config_for = eval_config(config, f"mtrag-{domain}", [base])
        folder = write_passages(chosen, config.data_dir / "eval" / f"mtrag-{domain}" / "docs")
        ingest_owned(ingest, config_for, folder, progress=False if quiet else None, embeddings=embeddings)
        fit_filter(config_for, embeddings)  # as `make run` does: from the corpus, no labels
        chain = load_chain(config_for, retriever=load_retriever(config_for, embeddings=embeddings), llm=llm,
                           judge=judge)
        llm, judge = chain.llm, chain.judge  # one LLM and one judge for every domain
        ungated = load_retriever(config_for.model_copy(update={"filter": config_for.filter.model_copy(
            update={"enabled": False})}), embeddings=embeddings)
        records = [record for conversation in tqdm(chosen[:limit or None], desc=domain, unit="conversation",
                                                   disable=quiet, leave=False)
                   for record in ask_conversation(chain, ungated, conversation)]
        results["domains"][domain] = {"collection": config_for.store.collection,
                                      "conversations": len(chosen[:limit or None]), "groups": summarize(records)}
    return results


def run_followups(config: Config, path: str | Path | None = None, *, ingest: Ingest, quiet: bool = False) -> dict[str, Any]:
    """`rag-bot eval answers --followups`: two-turn conversations over examples/docs through the chain as
    configured, the documents in an evaluation collection of their own with the gate trained from them."""
    from ..chain import load_chain
    from ..filter_training import fit_filter
    from ..models import LocalEmbeddings, reranker_wanted
    from ..retriever import load_retriever
    from .followups import ask_followups, read_followups, summarize_followups
    from .scope import EXAMPLE_DOCS

    items = read_followups(path)
    base = Pipeline("hybrid" if config.retriever.hybrid else "mmr", rerank=reranker_wanted(config.reranker), filter=True)
    config_for = eval_config(config, "examples-docs", [base])
    embeddings = LocalEmbeddings(config.embedding)
    ingest_owned(ingest, config_for, EXAMPLE_DOCS, progress=False if quiet else None, embeddings=embeddings)
    fit_filter(config_for, embeddings)
    chain = load_chain(config_for, retriever=load_retriever(config_for, embeddings=embeddings))
    figures = summarize_followups(ask_followups(chain, items))
    figures["config"] = {"answer_mode": config.chat.answer_mode, "llm": config.llm.model_path,
                         "judge_model": config.chat.judge_model, "set": str(path or "bundled")}
    return figures

"""The `rag-bot` command: the composition root, the only place that wires runtime and ingest.

Exit status: 0 success; 1 the job ran but some files were skipped because of errors; 2 nothing
was done (bad config, missing model, refused store); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .config import ENV_VAR, PACKAGED_EMBEDDER, load_config
from .errors import RagBotError

log = logging.getLogger("rag_bot")

_QUIET_LIBRARIES = ("pypdf", "chromadb", "httpx", "urllib3", "transformers", "sentence_transformers",
                    "langchain_core", "langchain_classic", "sqlalchemy", "gradio", "openai",
                    "llama-cpp-python", "bm25s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-bot", description="A local RAG chatbot over your own documents.")
    parser.add_argument("--config", metavar="PATH",
                        help=f"config file (default: ${ENV_VAR}, else ./config.yaml, else built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, with tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"rag-bot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ingest = commands.add_parser("ingest", help="bring the store in line with a folder of documents")
    ingest.add_argument("folder", metavar="DIR", help="folder of documents (walked recursively)")
    ingest.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    ingest.add_argument("--rebuild", action="store_true", help="delete the collection and ingest afresh")
    ingest.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.set_defaults(run=_ingest)

    search = commands.add_parser("search", help="retrieve passages for a question, with every score")
    search.add_argument("query", help="the question")
    search.add_argument("--k", type=int, default=None, help="how many passages (default: reranker.top_n)")
    search.add_argument("--source", action="append", metavar="GLOB", help="only sources matching GLOB (repeatable)")
    search.add_argument("--json", action="store_true", help="print the result as one JSON object")
    search.set_defaults(run=_search)

    train = commands.add_parser("train-filter", help="train the scope filter that declines out-of-scope questions")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--examples", metavar="FILE", help="labelled rows (text, label: answer|ignore) in CSV, JSONL or YAML")
    source.add_argument("--from-corpus", action="store_true",
                        help="no labels: questions generated from the ingested corpus against the bundled off-topic messages")
    train.add_argument("--json", action="store_true", help="print the report as one JSON object")
    train.set_defaults(run=_train_filter)

    ask = commands.add_parser("ask", help="answer one question in the terminal, then list its sources")
    ask.add_argument("question", help="the question")
    ask.add_argument("--json", action="store_true",
                     help='print {"answer", "declined", "sources": [{"n", "source", "page", "heading"}]}')
    ask.set_defaults(run=_ask)

    chat = commands.add_parser("chat", help="the chat UI in your browser (loopback only unless ui.host says otherwise)")
    chat.add_argument("--host", help="address to listen on (default: ui.host)")
    chat.add_argument("--port", type=int, help="port (default: ui.port)")
    chat.set_defaults(run=_chat)

    evaluate = commands.add_parser("eval", help="measure quality on public datasets")
    evaluations = evaluate.add_subparsers(dest="evaluation", required=True, metavar="WHAT")
    beir = evaluations.add_parser("retrieval", help="nDCG@10, Recall@10/100, MRR@10 per pipeline on a BEIR folder")
    beir.add_argument("--dataset", required=True, metavar="DIR", help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/")
    beir.add_argument("--split", default="test", help="qrels split (default: test)")
    beir.add_argument("--pipelines", metavar="LIST",
                      help="comma separated: dense, mmr, bm25, hybrid, each optionally +rerank and/or +filter "
                           "(default: the four, plus dense+rerank and hybrid+rerank when reranker.enabled, "
                           "and dense+filter when filter.enabled)")
    beir.add_argument("--chunk-size", type=int, help="override chunking.size (the corpus gets its own collection per size)")
    beir.add_argument("--chunk-overlap", type=int, help="override chunking.overlap")
    beir.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    beir.set_defaults(run=_eval_retrieval)

    scope = evaluations.add_parser("scope", help="false refusals and out-of-scope recall of the scope gate")
    scope.add_argument("--data", default="../shared/data", metavar="DIR",
                       help="folder with squad2-dev-subset/, scifact/ and banking77/ (default: ../shared/data)")
    scope.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    scope.set_defaults(run=_eval_scope)

    answers = evaluations.add_parser("answers", help="answers through the whole chain on SQuAD 2.0 questions")
    answers.add_argument("--squad", required=True, metavar="FILE", help="a SQuAD 2.0 JSON file")
    answers.add_argument("--sample", type=int, default=40, metavar="N",
                         help="answerable and unanswerable questions each (default: 40; 0: all)")
    answers.add_argument("--seed", type=int, default=0)
    answers.add_argument("--no-llm", action="store_true", help="measure answer_mode extract only (no LLM)")
    answers.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    answers.set_defaults(run=_eval_answers)

    sts = evaluations.add_parser("embeddings", help="Spearman/Pearson of cosine similarity on the STS Benchmark")
    sts.add_argument("--sts", required=True, metavar="DIR", help="the stsbenchmark folder (sts-test.csv, ...)")
    sts.add_argument("--split", default="test", help="train, dev or test (default: test)")
    sts.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    sts.set_defaults(run=_eval_embeddings)

    fine_tune = commands.add_parser("train", help="fine-tune the embedder or the reranker on your own pairs")
    models = fine_tune.add_subparsers(dest="model", required=True, metavar="WHAT")
    embedder = models.add_parser("embedder", help="fine-tune the bi-encoder (contrastive, in-batch negatives)")
    reranker = models.add_parser("reranker", help="train a cross-encoder with hard negatives mined by the retriever")
    # the embedder adapts a trained model; the reranker trains a new scoring head, so it takes larger steps
    for sub, batch, rate in ((embedder, 32, 2e-5), (reranker, 16, 3e-4)):
        pairs = sub.add_mutually_exclusive_group(required=True)
        pairs.add_argument("--pairs", metavar="FILE", help="CSV (header row) or JSONL with query, passage and optional negative")
        pairs.add_argument("--beir", metavar="DIR", help="build the pairs from a BEIR folder's qrels (see --split)")
        if sub is reranker:
            pairs.add_argument("--from-corpus", action="store_true",
                               help="no labels: questions generated from the ingested collection, each paired "
                                    "with the chunk it came from")
        sub.add_argument("--split", default="train", help="qrels split for --beir (default: train)")
        sub.add_argument("--out", required=True, metavar="DIR", help="folder for the trained model (resumes an interrupted run)")
        sub.add_argument("--epochs", type=int, default=1, help="passes over the pairs (default: 1)")
        sub.add_argument("--batch-size", type=int, default=batch, help=f"pairs per step (default: {batch})")
        sub.add_argument("--learning-rate", type=float, default=rate, help=f"default: {rate:g}")
        sub.add_argument("--val-fraction", type=float, default=0.1,
                         help="share of the queries held out to measure before and after (default: 0.1)")
        sub.add_argument("--seed", type=int, default=0)
        sub.add_argument("--json", action="store_true", help="print the report as one JSON object")
    embedder.set_defaults(run=_train_embedder)
    reranker.add_argument("--base", default=PACKAGED_EMBEDDER, metavar="MODEL",
                          help=f"encoder to start from: folder, hub name or package: (default: {PACKAGED_EMBEDDER})")
    reranker.add_argument("--negatives", type=int, default=4, help="hard negatives per query (default: 4)")
    reranker.add_argument("--questions", type=int, default=2000,
                          help="with --from-corpus: questions to generate from the collection (default: 2000)")
    reranker.set_defaults(run=_train_reranker)
    synthetic = models.add_parser("make-pairs", help="no labels: the local LLM writes a question for sampled chunks")
    synthetic.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write")
    synthetic.add_argument("--count", type=int, default=200, help="chunks to sample (default: 200)")
    synthetic.add_argument("--top", type=int, default=20,
                           help="keep a pair only if the retriever finds its chunk in the top N (default: 20)")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    synthetic.set_defaults(run=_make_pairs)

    hub = commands.add_parser("models", help="list the models the config names, or fetch them from the hub")
    hub_commands = hub.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = hub_commands.add_parser("list", help="each model: where it comes from, its size, whether it loads")
    listing.add_argument("--no-load", action="store_true", help="do not try loading them (faster)")
    listing.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    listing.set_defaults(run=_models_list)
    fetch = hub_commands.add_parser("fetch", help="download the hub models the config names into the cache")
    fetch.set_defaults(run=_models_fetch)

    stats = commands.add_parser("stats", help="files, chunks, model and location of the store")
    stats.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    stats.set_defaults(run=_stats)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.run(args)
    except RagBotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to finish (nothing stored is lost)", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only with --verbose
        if args.verbose:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (re-run with --verbose for details)", file=sys.stderr)
        return 1


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    # records from libraries that set their own loggers to DEBUG (bm25s) reach this handler too
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)


def _ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .models import LocalEmbeddings

    config = load_config(args.config)
    progress = False if (args.no_progress or args.json) else None
    embeddings = LocalEmbeddings(config.embedding)
    report = run_ingest(config, args.folder, dry_run=args.dry_run, rebuild=args.rebuild, progress=progress,
                        embeddings=embeddings)
    from .filter_training import refresh_filter

    scope = None if args.dry_run else refresh_filter(config, embeddings)
    if args.json:
        print(json.dumps({**report.to_json(), **({"filter": scope} if scope else {})}))
    else:
        print(report.summary())
        if scope:
            print(scope["message"])
    return report.exit_code


def _search(args: argparse.Namespace) -> int:
    from .retriever import load_retriever

    if args.k is not None and args.k < 1:
        raise RagBotError("--k: must be 1 or more")
    retriever = load_retriever(load_config(args.config))
    result = retriever.search(args.query, k=args.k, sources=args.source)
    if args.json:
        print(json.dumps({**search_json(result), "reranker": retriever.reranker_status}))
        return 0
    if result.declined:
        print(f"Declined: the question looks out of scope for these documents ({result.scope.why()}).")
        if result.scope.about:
            print("The documents are about: " + "; ".join(result.scope.about))
        return 0
    if not result.documents:
        print("Nothing relevant found.")
    for number, doc in enumerate(result.documents, 1):
        meta = doc.metadata
        where = meta["source"] + (f", page {meta['page']}" if meta.get("page") else "")
        where += f" — {meta['heading']}" if meta.get("heading") else ""
        scores = [f"mmr #{meta.get('mmr_rank')}"]
        if meta.get("rerank_score") is not None:
            scores.insert(0, f"rerank {meta['rerank_score']:.3f}")
        if meta.get("bm25_score") is not None:
            scores.append(f"bm25 {meta['bm25_score']:.2f}")
        if meta.get("scope_score") is not None:
            scores.append(f"scope {meta['scope_score']:.2f}")
        snippet = " ".join(doc.page_content.split())
        print(f"{number}. {where}\n   {' · '.join(scores)}\n   {snippet[:240]}{'…' if len(snippet) > 240 else ''}")
    return 0


def search_json(result: object) -> dict:
    """The `rag-bot search --json` object."""
    return {
        "declined": result.declined,
        "scope_score": result.scope_score,
        "threshold": result.threshold,
        "scope": result.scope.to_json() if result.scope else None,
        "results": [
            {
                "source": d.metadata.get("source"),
                "page": d.metadata.get("page"),
                "heading": d.metadata.get("heading"),
                "chunk_index": d.metadata.get("chunk_index"),
                "text": d.page_content,
                "mmr_rank": d.metadata.get("mmr_rank"),
                "rerank_score": d.metadata.get("rerank_score"),
            }
            for d in result.documents
        ],
        "timings_ms": {stage: round(ms, 2) for stage, ms in result.timings.items()},
    }


def _train_filter(args: argparse.Namespace) -> int:
    from .filter import filter_path
    from .filter_training import describe_metrics, fit_filter
    from .models import LocalEmbeddings

    config = load_config(args.config)
    scope = fit_filter(config, LocalEmbeddings(config.embedding), Path(args.examples) if args.examples else None)
    path = filter_path(config)
    if args.json:
        print(json.dumps({**scope.metrics, "path": str(path)}))
    else:
        print(describe_metrics(scope.metrics))
        print(f"saved:             {path}")
    return 0


def _ask(args: argparse.Namespace) -> int:
    from .chain import load_chain

    if not args.question.strip():
        raise RagBotError("the question is empty; pass it in quotes: rag-bot ask \"how do I ...?\"")
    chain = load_chain(load_config(args.config))
    if args.json:
        result = chain.invoke(args.question)
        print(json.dumps({"answer": result["answer"], "declined": result["declined"], "reason": result["reason"],
                          "grounded": result["grounded"], "evidence": [q.to_json() for q in result["evidence"]],
                          "scope": result["scope"], "sources": [source.to_json() for source in result["sources"]]}))
        return 0
    sources: list = []
    quotes: list = []
    quoted = False
    for event in chain.stream(args.question):
        sources = event.get("sources", sources)
        quotes = event.get("evidence", quotes)
        quoted = quoted or bool(event.get("quoted"))
        if "answer" in event:
            sys.stdout.write(event["answer"])
            sys.stdout.flush()
        if "final" in event:
            print("\n\n(That answer is not supported by the passages, so here is what they say instead.)")
            sys.stdout.write(event["final"])
    print()
    if quotes and not quoted:  # a reply made of the quotes already shows them
        print("\nEvidence:")
        for quote in quotes:
            print(f'[{quote.n}] "{quote.text}"')
    if sources:
        print("\nSources:")
        for source in sources:
            print(f"[{source.n}] {source.label()}")
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .chain import load_chain
    from .models import reranker_status
    from .prompts import load_prompts, prompts_dir
    from .ui import LazyChain, build_app, launch

    config = load_config(args.config)
    ui = config.ui.model_copy(update={key: value for key, value in (("host", args.host), ("port", args.port))
                                      if value is not None})
    load_prompts(prompts_dir(config))  # a broken template stops here, not at the first question
    chain = LazyChain(lambda: load_chain(config))
    chain.warm_up()
    print(f"rag-bot chat: open http://{ui.host}:{ui.port} in your browser (Ctrl+C to stop)", flush=True)
    try:
        launch(build_app(chain, note=f"Reranking {reranker_status(config.reranker)}"), ui)
    except OSError as exc:
        raise RagBotError(f"ui.port: cannot listen on {ui.host}:{ui.port} ({exc}); "
                          "choose another port with --port or ui.port") from exc
    return 0


def _eval_retrieval(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .eval.beir import load_beir, write_corpus
    from .eval.retrieval import METRICS, RetrievalEvaluator, parse_pipelines
    from .filter import filter_path
    from .models import LocalEmbeddings, reranker_wanted
    from .retriever import load_retriever

    config = load_config(args.config)
    dataset = load_beir(args.dataset, args.split)
    default = "dense,mmr,bm25,hybrid" + (",dense+rerank,hybrid+rerank" if reranker_wanted(config.reranker) else "") + \
        (",dense+filter" if config.filter.enabled else "")
    pipelines = parse_pipelines(args.pipelines or default)
    config = _eval_config(config, dataset.name, pipelines, args)
    docs = config.data_dir / "eval" / dataset.name / "docs"
    quiet = args.json
    count = write_corpus(dataset.folder, docs)
    embeddings = LocalEmbeddings(config.embedding)
    report = run_ingest(config, docs, progress=False if quiet else None, embeddings=embeddings)
    if not quiet:
        print(f"{dataset.name}: {count} documents -> {report.chunks_total} chunks in collection "
              f"{config.store.collection!r}; {len(dataset.queries)} {args.split} queries")
    if any(p.filter for p in pipelines) and not _usable_filter(filter_path(config)):
        from .filter_training import fit_filter

        fit_filter(config, embeddings)
    evaluator = RetrievalEvaluator(load_retriever(config, embeddings=embeddings), dataset, progress=not quiet)
    results = {pipeline.name: evaluator.evaluate(pipeline) for pipeline in pipelines}
    if quiet:
        print(json.dumps({"dataset": dataset.name, "split": args.split, "queries": len(dataset.queries),
                          "chunking": {"size": config.chunking.size, "overlap": config.chunking.overlap},
                          "pipelines": results}))
        return 0
    print(f"{'pipeline':<22}" + "".join(f"{metric:>12}" for metric in METRICS))
    for name, figures in results.items():
        print(f"{name:<22}" + "".join(f"{figures[metric]:>12.4f}" for metric in METRICS))
    return 0


def _eval_scope(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .eval.retrieval import Pipeline
    from .eval.scope import evaluate_gate, format_scope, out_of_scope_sets, scope_collections
    from .filter_training import fit_filter
    from .models import LocalEmbeddings
    from .retriever import load_retriever

    config = load_config(args.config)
    data = Path(args.data)
    off_topic = out_of_scope_sets(data)
    embeddings = LocalEmbeddings(config.embedding)
    results: dict = {"collections": {}}
    for collection in scope_collections(data, config.data_dir / "eval"):
        eval_config = _eval_config(config, collection.name, [Pipeline("dense", filter=True)])
        run_ingest(eval_config, collection.folder, progress=False if args.json else None, embeddings=embeddings)
        scope = fit_filter(eval_config, embeddings)
        retriever = load_retriever(eval_config, embeddings=embeddings)
        results["collections"][collection.name] = {
            "threshold": scope.threshold, "calibrated_on": scope.calibrated_on, "training": scope.metrics,
            "sets": {**evaluate_gate(retriever, collection.in_scope, True), **evaluate_gate(retriever, off_topic, False)}}
    print(json.dumps(results) if args.json else format_scope(results))
    return 0


def _eval_answers(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .chain import load_chain
    from .eval.answers import ask_all, format_answers, summarize
    from .eval.retrieval import Pipeline
    from .eval.squad import read_squad, sample_questions, write_articles
    from .filter_training import fit_filter
    from .models import LocalEmbeddings, reranker_wanted

    if args.sample < 0:
        raise RagBotError("--sample: must be 0 (all) or more")
    config = load_config(args.config)
    articles, questions = read_squad(args.squad)
    name = "squad-" + Path(args.squad).stem
    base = Pipeline("hybrid" if config.retriever.hybrid else "mmr", rerank=reranker_wanted(config.reranker),
                    filter=True)
    eval_config = _eval_config(config, name, [base])
    mode = "extract" if args.no_llm else "generate"
    eval_config = eval_config.model_copy(update={"chat": eval_config.chat.model_copy(update={"answer_mode": mode})})
    embeddings = LocalEmbeddings(config.embedding)
    folder = write_articles(articles, config.data_dir / "eval" / name / "docs")
    run_ingest(eval_config, folder, progress=False if args.json else None, embeddings=embeddings)
    fit_filter(eval_config, embeddings)  # as `make run` does: from the corpus, no labels
    from .retriever import load_retriever

    chain = load_chain(eval_config, retriever=load_retriever(eval_config, embeddings=embeddings))
    chosen = sample_questions(questions, args.sample or None, args.seed)
    records = ask_all(chain, chosen, progress=not args.json)
    figures = summarize(records, ("extract",) if args.no_llm else ("generate", "auto", "extract"))
    figures["config"] = {"answer_mode_run": mode, "min_evidence": eval_config.chat.min_evidence,
                         "reranker": eval_config.reranker.enabled, "hybrid": eval_config.retriever.hybrid}
    print(json.dumps(figures) if args.json else format_answers(figures))
    return 0


def _usable_filter(path: Path) -> bool:
    """Whether the evaluation collection's gate can be loaded (a missing or older one is retrained)."""
    from .filter import ScopeFilter

    try:
        ScopeFilter.load(path)
        return True
    except RagBotError:
        return False


def _eval_config(config: object, name: str, pipelines: list, args: argparse.Namespace | None = None) -> object:
    """The config for the evaluation collection: its own collection per dataset and chunk size
    (`args.chunk_size` / `args.chunk_overlap` override `chunking.*` when given)."""
    import re

    from pydantic import ValidationError

    from .errors import ConfigError

    chunking = config.chunking.model_copy(update={key: value for key, value in
                                                  (("size", getattr(args, "chunk_size", None)),
                                                   ("overlap", getattr(args, "chunk_overlap", None)))
                                                  if value is not None})
    try:
        chunking = type(chunking).model_validate(chunking.model_dump())
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--chunk-size/--chunk-overlap: {problem}") from exc
    collection = re.sub(r"[^A-Za-z0-9._-]", "-", f"eval-{name}-c{chunking.size}-o{chunking.overlap}"
                        f"{'-ctx' if chunking.context_header else ''}{_model_tag(config.embedding.model)}")
    return config.model_copy(update={
        "chunking": chunking,
        "store": config.store.model_copy(update={"collection": collection}),
        "retriever": config.retriever.model_copy(update={"hybrid": any(p.base in ("bm25", "hybrid") for p in pipelines)}),
        "reranker": config.reranker.model_copy(update={"enabled": any(p.rerank for p in pipelines)}),
        "filter": config.filter.model_copy(update={"enabled": any(p.filter for p in pipelines)}),
    })




def _model_tag(model: str) -> str:
    """'' for the packaged embedder, else a short tag of the model and its weights' time: a
    fine-tuned model gets its own evaluation collection (and a retrained one a fresh one)."""
    if model == PACKAGED_EMBEDDER:
        return ""
    import hashlib

    weights = [p.stat().st_mtime_ns for p in sorted(Path(model).glob("*.safetensors"))] if Path(model).is_dir() else []
    return "-m" + hashlib.sha1(repr((model, weights)).encode()).hexdigest()[:8]


def _beir_store(config: object, folder: str, quiet: bool, embeddings: object) -> object:
    """The BEIR corpus ingested (incrementally) into its evaluation collection, as `eval retrieval`
    does; returns the config for it (the configured hybrid setting; no reranker, no filter)."""
    from ingest.pipeline import run_ingest

    from .eval.beir import corpus_file, write_corpus
    from .eval.retrieval import Pipeline

    corpus_file(Path(folder))
    name = Path(folder).resolve().name
    config = _eval_config(config, name, [Pipeline("hybrid" if config.retriever.hybrid else "mmr")])
    docs = config.data_dir / "eval" / name / "docs"
    write_corpus(Path(folder), docs)
    report = run_ingest(config, docs, progress=False if quiet else None, embeddings=embeddings)
    if not quiet:
        print(f"{name}: {report.chunks_total} chunks in collection {config.store.collection!r}", file=sys.stderr)
    return config


def _train_settings(args: argparse.Namespace) -> object:
    from .train.run import TrainSettings

    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         val_fraction=args.val_fraction, seed=args.seed,
                         progress=not args.json or sys.stderr.isatty())  # bars go to stderr, beside --json


def _read_training_pairs(args: argparse.Namespace) -> tuple[list, str]:
    from .train.pairs import beir_pairs, read_pairs

    if args.beir:
        return beir_pairs(args.beir, args.split), f"{args.beir} ({args.split} qrels)"
    if getattr(args, "from_corpus", False):
        from .filter_training import sample_chunks
        from .store import get_collection, open_client
        from .train.pairs import corpus_pairs

        config = load_config(args.config)
        if args.questions < 10:
            raise RagBotError("--questions: must be 10 or more")
        collection = get_collection(open_client(config), config.store.collection)
        if collection is None:
            raise RagBotError(f"--from-corpus: no collection {config.store.collection!r}; run `rag-bot ingest DIR` first")
        pairs = corpus_pairs(sample_chunks(collection, args.questions, args.seed), args.questions, args.seed)
        return pairs, f"{len(pairs)} questions generated from collection {config.store.collection!r}"
    return read_pairs(args.pairs), str(args.pairs)


def _print_training(report: object, json_out: bool, after_lines: list[str]) -> None:
    from dataclasses import asdict

    if json_out:
        print(json.dumps(asdict(report)))
        return
    print(f"{report.kind} trained from {report.base_model} on {report.train_pairs} training rows "
          f"in {report.train_seconds:.0f} s ({report.steps} steps); saved to {report.out}")
    if report.before or report.after:
        print(f"validation ({report.validation_queries} held-out queries):")
        for metric in report.after or report.before:
            before, after = report.before.get(metric), report.after.get(metric)
            print(f"  {metric:<14} before {before if before is not None else '-':>8}   after {after if after is not None else '-':>8}")
    for line in after_lines:
        print(line)


def _train_embedder(args: argparse.Namespace) -> int:
    from .train.embedder import train_embedder

    config = load_config(args.config)
    pairs, source = _read_training_pairs(args)
    corpus = None
    if args.beir:
        from .eval.beir import document_text, iter_corpus

        corpus = {doc_id: document_text(title, text).strip() for doc_id, title, text in iter_corpus(Path(args.beir))}
    report = train_embedder(pairs, config.embedding, args.out, _train_settings(args), corpus=corpus, source=source)
    from ingest.index import describe

    folder = describe(config)["folder"] or "DIR"
    out = Path(args.out).resolve()
    _print_training(report, args.json, [
        f"To use it: set `embedding.model: {out}` in your config, then re-embed the store with it (one command;",
        "it also retrains the scope filter for the new model from what the old one was trained on):",
        f"  rag-bot ingest {folder} --rebuild",
        "To measure it on a BEIR folder: rag-bot eval retrieval --dataset DIR with that config "
        "(it gets its own evaluation collection).",
    ])
    return 0


def _train_reranker(args: argparse.Namespace) -> int:
    from .models import LocalEmbeddings
    from .retriever import load_retriever
    from .train.reranker import train_reranker

    config = load_config(args.config)
    pairs, source = _read_training_pairs(args)
    mining = config.model_copy(update={"reranker": config.reranker.model_copy(update={"enabled": False}),
                                       "filter": config.filter.model_copy(update={"enabled": False})})
    embeddings = LocalEmbeddings(config.embedding)  # one model for the ingest of --beir and the mining
    if args.beir:
        mining = _beir_store(mining, args.beir, args.json, embeddings)
    retriever = load_retriever(mining, embeddings=embeddings)
    report = train_reranker(pairs, retriever, args.out, _train_settings(args), base_model=args.base,
                            negatives=args.negatives, device=config.reranker.device, source=source)
    out = Path(args.out).resolve()
    _print_training(report, args.json, [
        "(before: the start model, whose scoring head is untrained unless --base is a cross-encoder)",
        f"To use it: set `reranker.model: {out}` and `reranker.enabled: true` in your config.",
    ])
    return 0


def _make_pairs(args: argparse.Namespace) -> int:
    from .llm import load_llm
    from .retriever import load_retriever
    from .train.synthetic import load_template, make_pairs

    config = load_config(args.config)
    template = load_template(config.chat.prompts_dir)
    search = config.model_copy(update={"reranker": config.reranker.model_copy(update={"enabled": False}),
                                       "filter": config.filter.model_copy(update={"enabled": False})})
    stats = make_pairs(load_llm(config), load_retriever(search), args.out, count=args.count, top=args.top,
                       template=template, seed=args.seed, progress=not args.json)
    if args.json:
        print(json.dumps(stats.to_json()))
        return 0
    print(f"wrote {stats.written} pairs of {stats.sampled} sampled chunks to {stats.out} "
          f"(rejected: {stats.no_question} no usable question, {stats.duplicate} duplicates, "
          f"{stats.not_retrieved} whose chunk the retriever did not find in the top {args.top})")
    for row in stats.examples:
        print(f"  Q: {row['query']}\n     from {row['source']}")
    print(f"Next: rag-bot train embedder --pairs {stats.out} --out DIR  (or train reranker)")
    return 0


def _eval_embeddings(args: argparse.Namespace) -> int:
    from .eval.sts import evaluate_sts, read_sts, sts_file
    from .models import LocalEmbeddings

    config = load_config(args.config)
    pairs = read_sts(sts_file(args.sts, args.split))
    figures = evaluate_sts(LocalEmbeddings(config.embedding), pairs, progress=not args.json)
    result = {"dataset": "stsbenchmark", "split": args.split, "model": config.embedding.model, **figures}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"STS Benchmark {args.split}: {figures['pairs']} pairs, model {config.embedding.model}")
        print(f"spearman: {figures['spearman']:.4f}   pearson: {figures['pearson']:.4f}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from .hub import list_models

    rows = list_models(load_config(args.config), check=not args.no_load)
    if args.json:
        print(json.dumps({"models": [row.to_json() for row in rows]}))
        return 0
    for row in rows:
        size = f"{row.size_bytes / 1e6:,.0f} MB" if row.size_bytes is not None else "-"
        print(f"{row.role}: {row.source.ref}  [{row.key}]")
        print(f"  from:  {row.source.where()}")
        print(f"  path:  {row.source.path or '-'}   size: {size}")
        print(f"  loads: {row.loads}")
    return 0


def _models_fetch(args: argparse.Namespace) -> int:
    from .hub import fetch_models

    failed = 0
    for key, ref, what, why in fetch_models(load_config(args.config)):
        if why is None:
            print(f"{key}: {ref}: {what}", flush=True)
        else:
            failed += 1
            print(f"error: {key}: {ref}: {why}", file=sys.stderr, flush=True)
    return 2 if failed else 0


def _stats(args: argparse.Namespace) -> int:
    from ingest.index import describe

    from .models import reranker_status

    config = load_config(args.config)
    info = {**describe(config), "reranker": reranker_status(config.reranker)}
    if args.json:
        print(json.dumps(info))
    elif info["model"] is None and info["chunks"] == 0:
        print(f"No documents yet in collection {info['collection']!r} at {info['store']}; run `rag-bot ingest DIR`.")
    else:
        print(f"collection: {info['collection']} at {info['store']}")
        print(f"folder:     {info['folder'] or 'unknown'}")
        print(f"files:      {info['files']}")
        print(f"chunks:     {info['chunks']}")
        print(f"model:      {info['model']} ({info['dimension'] or '?'} dimensions)")
        print(f"chunking:   {info['chunking'] or 'unknown'}")
        print(f"ingest:     {'running: ' + info['ingest_running'] if info['ingest_running'] else 'none running'}")
        print(f"reranker:   {info['reranker']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `rag-bot` command: the composition root, the only place that wires runtime and ingest.

Exit status: 0 success; 1 the job ran but some files were skipped because of errors; 2 nothing
was done (`EXIT_STATUS`: bad config or argument, unusable input, missing model, refused store);
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import __version__
from .config import ENV_VAR, PACKAGED_EMBEDDER, Config, load_config
from .errors import ConfigError, InputError, ModelError, RagBotError, StoreError, UsageError
from .logs import configure_logging

if TYPE_CHECKING:
    from .app import App, Ingested
    from .train.run import TrainReport, TrainSettings

# Each error class's exit status, in one place: all of them mean that nothing was done.
EXIT_STATUS: dict[type[RagBotError], int] = {ConfigError: 2, UsageError: 2, InputError: 2, ModelError: 2, StoreError: 2}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag-bot", description="A local RAG chatbot over your own documents.")
    parser.add_argument("--config", metavar="PATH",
                        help=f"config file (default: ${ENV_VAR}, else ./config.yaml, else built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens, with tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"rag-bot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_ingest_parser, _search_parser, _train_filter_parser, _ask_parser, _chat_parser, _serve_parser,
                _mcp_parser, _eval_parser, _train_parser, _models_parser, _stats_parser, _collections_parser):
        add(commands)
    return parser


def _command(commands: Any, name: str, run: Callable[[argparse.Namespace], int], help: str,
             json_help: str | None = "print the result as one JSON object", collection: bool = True) -> argparse.ArgumentParser:
    """A sub-command that runs `run(args)`, with a --json flag unless `json_help` is None, and
    --collection unless the command works on collections of its own (`collection=False`)."""
    command = commands.add_parser(name, help=help)
    command.set_defaults(run=run)
    if json_help:
        command.add_argument("--json", action="store_true", help=json_help)
    if collection:
        command.add_argument("--collection", metavar="NAME",
                             help="the collection to use (default: store.collection); each mirrors its own folder")
    return command


def _config(args: argparse.Namespace) -> Config:
    """The config the command names, over the collection `--collection` names."""
    return load_config(args.config).for_collection(getattr(args, "collection", None))


def _group(commands: Any, name: str, help: str, dest: str, metavar: str = "WHAT") -> Any:
    """A command with sub-commands of its own (`eval retrieval`, `train reranker`, `models list`)."""
    return commands.add_parser(name, help=help).add_subparsers(dest=dest, required=True, metavar=metavar)


def _ingest_parser(commands: Any) -> None:
    ingest = _command(commands, "ingest", _ingest, "bring the store in line with a folder of documents",
                      "print the summary as one JSON object")
    ingest.add_argument("folder", metavar="DIR", help="folder of documents (walked recursively)")
    ingest.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    ingest.add_argument("--rebuild", action="store_true", help="delete the collection and ingest afresh")
    ingest.add_argument("--no-progress", action="store_true", help="no progress bar")
    ingest.add_argument("--watch", action="store_true",
                        help="keep mirroring the folder: ingest again after each burst of changes, until Ctrl+C")


def _search_parser(commands: Any) -> None:
    search = _command(commands, "search", _search, "retrieve passages for a question, with every score")
    search.add_argument("query", help="the question")
    search.add_argument("--k", type=int, default=None, help="how many passages (default: reranker.top_n)")
    search.add_argument("--source", action="append", metavar="GLOB", help="only sources matching GLOB (repeatable)")


def _train_filter_parser(commands: Any) -> None:
    train = _command(commands, "train-filter", _train_filter,
                     "train the scope filter that declines out-of-scope questions", "print the report as one JSON object")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--examples", metavar="FILE", help="labelled rows (text, label: answer|ignore) in CSV, JSONL or YAML")
    source.add_argument("--from-corpus", action="store_true",
                        help="no labels: questions generated from the ingested corpus against the bundled off-topic messages")


def _ask_parser(commands: Any) -> None:
    ask = _command(commands, "ask", _ask, "answer one question in the terminal, then list its sources",
                   'print {"answer", "declined", "sources": [{"n", "source", "page", "heading"}]}')
    ask.add_argument("question", help="the question")


def _chat_parser(commands: Any) -> None:
    chat = _command(commands, "chat", _chat, "the chat UI in your browser (loopback only unless ui.host says otherwise)",
                    None)
    chat.add_argument("--host", help="address to listen on (default: ui.host)")
    chat.add_argument("--port", type=int, help="port (default: ui.port)")


def _serve_parser(commands: Any) -> None:
    serve = _command(commands, "serve", _serve, "the OpenAI-compatible HTTP API, with sources (loopback unless api.host "
                     "says otherwise)", None)
    serve.add_argument("--host", help="address to listen on (default: api.host; beyond loopback needs api.key)")
    serve.add_argument("--port", type=int, help="port (default: api.port)")


def _mcp_parser(commands: Any) -> None:
    mcp = _command(commands, "mcp", _mcp, "the collections as an MCP server for assistants and editors: stdio, "
                   "or streamable HTTP at /mcp with --port", None, collection=False)
    mcp.add_argument("--port", type=int, help="serve streamable HTTP on this port instead of stdio")
    mcp.add_argument("--host", help="address for --port (default: api.host; beyond loopback needs api.key)")


def _eval_parser(commands: Any) -> None:
    evaluations = _group(commands, "eval", "measure quality on public datasets", "evaluation")
    figures = "print the figures as one JSON object"
    beir = _command(evaluations, "retrieval", _eval_retrieval,
                    "nDCG@10, Recall@10/100, MRR@10 per pipeline on a BEIR folder", figures, collection=False)
    beir.add_argument("--dataset", required=True, metavar="DIR", help="BEIR folder: corpus.jsonl[.gz], queries.jsonl, qrels/")
    beir.add_argument("--split", default="test", help="qrels split (default: test)")
    beir.add_argument("--pipelines", metavar="LIST",
                      help="comma separated: dense, mmr, bm25, hybrid, each optionally +rerank and/or +filter "
                           "(default: the four, plus dense+rerank and hybrid+rerank when reranker.enabled, "
                           "and dense+filter when filter.enabled)")
    beir.add_argument("--chunk-size", type=int, help="override chunking.size (the corpus gets its own collection per size)")
    beir.add_argument("--chunk-overlap", type=int, help="override chunking.overlap")
    scope = _command(evaluations, "scope", _eval_scope, "false refusals and out-of-scope recall of the scope gate", figures,
                     collection=False)
    scope.add_argument("--data", default="../shared/data", metavar="DIR",
                       help="folder with squad2-dev-subset/, scifact/ and banking77/ (default: ../shared/data)")
    answers = _command(evaluations, "answers", _eval_answers, "answers through the whole chain on SQuAD 2.0 questions",
                       figures, collection=False)
    answers.add_argument("--squad", metavar="FILE", help="a SQuAD 2.0 JSON file")
    answers.add_argument("--followups", nargs="?", const="bundled", metavar="FILE",
                         help="two-turn conversations over examples/docs instead (default set: the bundled "
                              "rag_bot/eval/data/docs_followups.txt)")
    answers.add_argument("--sample", type=int, default=40, metavar="N",
                         help="answerable and unanswerable questions each (default: 40; 0: all)")
    answers.add_argument("--seed", type=int, default=0)
    answers.add_argument("--no-llm", action="store_true", help="measure answer_mode extract only (no LLM)")
    answers.add_argument("--judge", metavar="MODEL", help="use this chat.judge_model (e.g. package:rag_bot.judge_model); "
                         "'none': no judge (default: the configured one)")
    talks = _command(evaluations, "conversations", _eval_conversations,
                     "multi-turn conversations (MTRAG) through the whole chain, follow-ups and all", figures,
                     collection=False)
    talks.add_argument("--data", default="../shared/data/conversations", metavar="DIR",
                       help="the conversations folder (default: ../shared/data/conversations)")
    talks.add_argument("--domains", metavar="LIST", help="comma separated: clapnq, cloud, fiqa (default: all)")
    talks.add_argument("--limit", type=int, default=0, metavar="N", help="conversations per domain (default: 0, all)")
    sts = _command(evaluations, "embeddings", _eval_embeddings,
                   "Spearman/Pearson of cosine similarity on the STS Benchmark", figures, collection=False)
    sts.add_argument("--sts", required=True, metavar="DIR", help="the stsbenchmark folder (sts-test.csv, ...)")
    sts.add_argument("--split", default="test", help="train, dev or test (default: test)")


def _train_parser(commands: Any) -> None:
    models = _group(commands, "train", "fine-tune the embedder or the reranker on your own pairs", "model")
    report = "print the report as one JSON object"
    embedder = _command(models, "embedder", _train_embedder,
                        "fine-tune the bi-encoder (contrastive, in-batch negatives)", report)
    reranker = _command(models, "reranker", _train_reranker,
                        "train a cross-encoder with hard negatives mined by the retriever", report)
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
    reranker.add_argument("--base", default=PACKAGED_EMBEDDER, metavar="MODEL",
                          help=f"encoder to start from: folder, hub name or package: (default: {PACKAGED_EMBEDDER})")
    reranker.add_argument("--negatives", type=int, default=4, help="hard negatives per query (default: 4)")
    reranker.add_argument("--questions", type=int, default=2000,
                          help="with --from-corpus: questions to generate from the collection (default: 2000)")
    synthetic = _command(models, "make-pairs", _make_pairs, "no labels: the local LLM writes a question for sampled chunks",
                         "print the counts as one JSON object")
    synthetic.add_argument("--out", required=True, metavar="FILE", help="JSONL file to write")
    synthetic.add_argument("--count", type=int, default=200, help="chunks to sample (default: 200)")
    synthetic.add_argument("--top", type=int, default=20,
                           help="keep a pair only if the retriever finds its chunk in the top N (default: 20)")
    synthetic.add_argument("--seed", type=int, default=0)


def _models_parser(commands: Any) -> None:
    actions = _group(commands, "models", "list the models the config names, or fetch them from the hub", "action",
                     "ACTION")
    listing = _command(actions, "list", _models_list, "each model: where it comes from, its size, whether it loads",
                       "print the rows as one JSON object", collection=False)
    listing.add_argument("--no-load", action="store_true", help="do not try loading them (faster)")
    _command(actions, "fetch", _models_fetch, "download the hub models the config names into the cache", None,
             collection=False)


def _collections_parser(commands: Any) -> None:
    _command(commands, "collections", _collections, "the store's collections: folder, files, chunks, model",
             "print the list as one JSON array", collection=False)


def _stats_parser(commands: Any) -> None:
    _command(commands, "stats", _stats, "files, chunks, model and location of the store", "print the figures as one JSON object")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    try:
        return args.run(args)
    except RagBotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return next((status for kind, status in EXIT_STATUS.items() if isinstance(exc, kind)), 2)
    except KeyboardInterrupt:
        print("interrupted; run the same command again to finish (nothing stored is lost)", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback only with --verbose
        if args.verbose:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (re-run with --verbose for details)", file=sys.stderr)
        return 1


def _ingest(args: argparse.Namespace) -> int:
    from .app import App

    app = App(_config(args))
    if args.watch:
        return _watch(args, app)
    done = app.ingest(args.folder, dry_run=args.dry_run, rebuild=args.rebuild,
                      progress=False if (args.no_progress or args.json) else None)
    print(json.dumps(done.to_json()) if args.json else done.summary())
    return done.report.exit_code


def _watch(args: argparse.Namespace, app: App) -> int:
    if args.dry_run:
        raise UsageError("--watch and --dry-run: choose one (a dry run writes nothing to keep in sync)")
    first = [True]

    def report(done: Ingested) -> None:
        if args.json:
            print(json.dumps(done.to_json()), flush=True)
        elif done.changed or done.report.skipped or first:  # a run that found nothing new stays quiet
            print(done.summary(), flush=True)
        first.clear()

    def failed(exc: RagBotError) -> None:
        print(f"error: {exc} (still watching)", file=sys.stderr, flush=True)

    print(f"watching {args.folder} (Ctrl+C to stop)", file=sys.stderr, flush=True)
    app.watch(args.folder, on_run=report, on_error=failed, rebuild=args.rebuild)
    print("stopped watching", file=sys.stderr, flush=True)
    return 0


def _search(args: argparse.Namespace) -> int:
    from .retriever import load_retriever

    if args.k is not None and args.k < 1:
        raise UsageError("--k: must be 1 or more")
    retriever = load_retriever(_config(args))
    result = retriever.search(args.query, k=args.k, sources=args.source)
    if args.json:
        print(json.dumps({**result.to_json(), "reranker": retriever.reranker_status}))
    else:
        print("\n".join(result.lines()))
    return 0


def _train_filter(args: argparse.Namespace) -> int:
    from .filter import filter_path
    from .filter_training import describe_metrics, fit_filter
    from .models import LocalEmbeddings

    config = _config(args)
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
    from .events import Reply
    from .reply import terminal_text

    if not args.question.strip():
        raise UsageError("the question is empty; pass it in quotes: rag-bot ask \"how do I ...?\"")
    chain = load_chain(_config(args))
    chain.load_judge_in_background()
    if args.json:
        print(json.dumps(Reply.of(chain.stream(args.question)).to_json()))
        return 0
    for text in terminal_text(chain.stream(args.question)):
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0


def _chat(args: argparse.Namespace) -> int:
    from .app import App
    from .models import reranker_status
    from .ui import build_app, launch

    config = _config(args)
    ui = config.ui.model_copy(update={key: value for key, value in (("host", args.host), ("port", args.port))
                                      if value is not None})
    _check_port("ui.port", ui.host, ui.port)
    app = App(config)  # one set of models for every collection the picker offers
    app.check_prompts()
    app.warm_up()
    print(f"rag-bot chat: open http://{ui.host}:{ui.port} in your browser (Ctrl+C to stop)", flush=True)
    page = build_app(app.service.chain, note=f"Reranking {reranker_status(config.reranker)}",
                     documents=app.documents if ui.documents else None, collections=app.service.names)
    try:
        launch(page, ui, max_file_mb=config.ingest.max_file_mb)
    except OSError as exc:
        raise ConfigError(f"ui.port: cannot listen on {ui.host}:{ui.port} ({exc}); "
                          "choose another port with --port or ui.port") from exc
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .api import build_api, check_exposure, serve
    from .app import App

    config = _config(args)
    api = config.api.model_copy(update={key: value for key, value in (("host", args.host), ("port", args.port))
                                        if value is not None})
    check_exposure(api)
    _check_port("api.port", api.host, api.port)
    app = App(config, max_queue=api.max_queue)
    app.check_prompts()
    app.warm_up()
    print(f"rag-bot serve: OpenAI-compatible API at http://{api.host}:{api.port}/v1 (model: {config.store.collection}; "
          "Ctrl+C to stop)", flush=True)
    try:
        serve(build_api(app.service, api), api)
    finally:
        app.close()
    return 0


def _mcp(args: argparse.Namespace) -> int:
    from .api import api_key, check_exposure
    from .app import App
    from .mcp_server import PATH, build_mcp, serve_http, serve_stdio

    config = _config(args)
    api = config.api.model_copy(update={key: value for key, value in (("host", args.host), ("port", args.port))
                                        if value is not None})
    if args.host is not None and args.port is None:
        raise UsageError("--host: give --port too; without it the server speaks over stdin and stdout")
    if args.port is not None:
        check_exposure(api)
        _check_port("--port", api.host, api.port)
    app = App(config, max_queue=api.max_queue)
    app.check_prompts()
    server = build_mcp(app.service, app.documents, api)
    try:
        if args.port is None:
            print("rag-bot mcp: serving over stdin and stdout (the client launches this command)", file=sys.stderr)
            serve_stdio(server)
        else:
            print(f"rag-bot mcp: streamable HTTP at http://{api.host}:{api.port}{PATH} (Ctrl+C to stop)", flush=True)
            serve_http(server, api, api_key(api))
    finally:
        app.close()
    return 0


def _check_port(key: str, host: str, port: int) -> None:
    """Stop at once when `host`:`port` is taken, before the models load (seconds to a minute) only to
    find the server cannot start."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            probe.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"{key}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                          f"choose another port with --port or {key}") from exc


def _eval_retrieval(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .eval.retrieval import METRICS
    from .eval.runs import run_retrieval

    results = run_retrieval(_config(args), args.dataset, split=args.split, pipelines=args.pipelines,
                            chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, ingest=run_ingest,
                            say=None if args.json else print)
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'pipeline':<22}" + "".join(f"{metric:>12}" for metric in METRICS))
    for name, figures in results["pipelines"].items():
        print(f"{name:<22}" + "".join(f"{figures[metric]:>12.4f}" for metric in METRICS))
    return 0


def _eval_scope(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .eval.runs import run_scope
    from .eval.scope import format_scope

    results = run_scope(_config(args), args.data, ingest=run_ingest, quiet=args.json)
    print(json.dumps(results) if args.json else format_scope(results))
    return 0


def _eval_answers(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .eval.answers import format_answers
    from .eval.runs import run_answers

    config = _config(args)
    if args.judge:
        judge_model = None if args.judge == "none" else args.judge
        config = config.model_copy(update={"chat": config.chat.model_copy(update={"judge_model": judge_model})})
    if args.followups:
        from .eval.followups import format_followups
        from .eval.runs import run_followups

        found = run_followups(config, None if args.followups == "bundled" else args.followups, ingest=run_ingest,
                              quiet=args.json)
        print(json.dumps(found) if args.json else format_followups(found))
        return 0
    if not args.squad:
        raise UsageError("eval answers: give --squad FILE (SQuAD 2.0 questions) or --followups")
    figures = run_answers(config, args.squad, sample=args.sample, seed=args.seed,
                          llm=not args.no_llm, ingest=run_ingest, quiet=args.json)
    print(json.dumps(figures) if args.json else format_answers(figures))
    return 0


def _eval_conversations(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    from .eval.conversations import format_conversations
    from .eval.runs import run_conversations

    figures = run_conversations(_config(args), args.data, domains=args.domains.split(",") if args.domains else None,
                                limit=args.limit, ingest=run_ingest, quiet=args.json)
    print(json.dumps(figures) if args.json else format_conversations(figures))
    return 0


def _train_settings(args: argparse.Namespace) -> TrainSettings:
    from .train.run import TrainSettings

    return TrainSettings(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
                         val_fraction=args.val_fraction, seed=args.seed,
                         progress=not args.json or sys.stderr.isatty())  # bars go to stderr, beside --json


def _training_pairs(args: argparse.Namespace, config: object) -> tuple[list, str]:
    from .train.pairs import training_pairs

    return training_pairs(config, pairs_file=args.pairs, beir=args.beir, split=args.split,
                          from_corpus=getattr(args, "from_corpus", False), questions=getattr(args, "questions", 0),
                          seed=args.seed)


def _print_training(report: TrainReport, json_out: bool, after_lines: list[str]) -> None:
    from dataclasses import asdict

    print(json.dumps(asdict(report)) if json_out else "\n".join(report.lines() + after_lines))


def _train_embedder(args: argparse.Namespace) -> int:
    from .eval.beir import beir_texts
    from .train.embedder import train_embedder

    config = _config(args)
    pairs, source = _training_pairs(args, config)
    corpus = beir_texts(Path(args.beir)) if args.beir else None
    report = train_embedder(pairs, config.embedding, args.out, _train_settings(args), corpus=corpus, source=source)
    from ingest.status import describe

    _print_training(report, args.json, report.next_steps(describe(config)["folder"]))
    return 0


def _train_reranker(args: argparse.Namespace) -> int:
    from .models import LocalEmbeddings
    from .retriever import load_retriever
    from .train.reranker import train_reranker

    config = _config(args)
    pairs, source = _training_pairs(args, config)
    mining = config.candidates_only()
    embeddings = LocalEmbeddings(config.embedding)  # one model for the ingest of --beir and the mining
    if args.beir:
        from ingest.pipeline import run_ingest

        from .eval.runs import beir_store

        mining = beir_store(mining, args.beir, ingest=run_ingest, embeddings=embeddings,
                            say=None if args.json else lambda line: print(line, file=sys.stderr))
    retriever = load_retriever(mining, embeddings=embeddings)
    report = train_reranker(pairs, retriever, args.out, _train_settings(args), base_model=args.base,
                            negatives=args.negatives, device=config.reranker.device, source=source)
    _print_training(report, args.json, report.next_steps())
    return 0


def _make_pairs(args: argparse.Namespace) -> int:
    from .llm import load_llm
    from .retriever import load_retriever
    from .train.synthetic import load_template, make_pairs

    config = _config(args)
    template = load_template(config.chat.prompts_dir)
    stats = make_pairs(load_llm(config), load_retriever(config.candidates_only()), args.out, count=args.count, top=args.top,
                       template=template, seed=args.seed, progress=not args.json)
    print(json.dumps(stats.to_json()) if args.json else "\n".join(stats.lines(args.top)))
    return 0


def _eval_embeddings(args: argparse.Namespace) -> int:
    from .eval.sts import evaluate_sts, read_sts, sts_file
    from .models import LocalEmbeddings

    config = _config(args)
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
    from .model_report import list_models

    rows = list_models(_config(args), check=not args.no_load)
    print(json.dumps({"models": [row.to_json() for row in rows]}) if args.json
          else "\n".join(line for row in rows for line in row.lines()))
    return 0


def _models_fetch(args: argparse.Namespace) -> int:
    from .hub import fetch_models

    failed = 0
    for key, ref, what, why in fetch_models(_config(args)):
        if why is None:
            print(f"{key}: {ref}: {what}", flush=True)
        else:
            failed += 1
            print(f"error: {key}: {ref}: {why}", file=sys.stderr, flush=True)
    return 2 if failed else 0


def _stats(args: argparse.Namespace) -> int:
    from ingest.status import describe, describe_lines

    from .models import reranker_status

    from .models import LocalEmbeddings

    config = _config(args)
    info = {**describe(config), "encoder": LocalEmbeddings(config.embedding).describe_backend(),
            "reranker": reranker_status(config.reranker)}
    print(json.dumps(info) if args.json else "\n".join(describe_lines(info)))
    return 0


def _collections(args: argparse.Namespace) -> int:
    from ingest.status import describe

    from .store import collection_names

    config = _config(args)
    rows = [describe(config.for_collection(name)) for name in collection_names(config)]
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print(f"no collections yet in {config.data_dir}; run rag-bot ingest DIR [--collection NAME]")
    for row in [] if args.json else rows:
        mark = "*" if row["collection"] == config.store.collection else " "
        print(f"{mark} {row['collection']}: {row['files']} files, {row['chunks']} chunks, {row['model']}, "
              f"folder {row['folder'] or '?'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

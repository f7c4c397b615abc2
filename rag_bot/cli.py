"""The `rag-bot` command: the composition root, the only place that wires runtime and ingest.

Exit status: 0 success; 1 the job ran but some files were skipped because of errors; 2 nothing
was done (bad config, missing model, refused store); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence

from . import __version__
from .config import ENV_VAR, load_config
from .errors import RagBotError

log = logging.getLogger("rag_bot")

_QUIET_LIBRARIES = ("pypdf", "chromadb", "httpx", "urllib3", "transformers", "sentence_transformers",
                    "langchain_core", "langchain_classic", "sqlalchemy")


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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)


def _ingest(args: argparse.Namespace) -> int:
    from ingest.pipeline import run_ingest

    config = load_config(args.config)
    progress = False if (args.no_progress or args.json) else None
    report = run_ingest(config, args.folder, dry_run=args.dry_run, rebuild=args.rebuild, progress=progress)
    print(json.dumps(report.to_json()) if args.json else report.summary())
    return report.exit_code


def _stats(args: argparse.Namespace) -> int:
    from ingest.index import describe

    info = describe(load_config(args.config))
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

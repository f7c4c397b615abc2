"""Logging for the command line: only the CLI (and the UI it starts) configures logging; every module
logs through `logging.getLogger(__name__)`."""

from __future__ import annotations

import logging
import sys

QUIET_LIBRARIES = ("pypdf", "chromadb", "httpx", "urllib3", "transformers", "sentence_transformers",
                   "langchain_core", "langchain_classic", "sqlalchemy", "gradio", "openai",
                   "llama-cpp-python", "bm25s")


def configure_logging(verbose: bool) -> None:
    """Log to stderr: warnings and errors as bare lines, or with --verbose everything from INFO up with
    its logger name; chatty libraries are held to errors (warnings with --verbose)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"))
    # records from libraries that set their own loggers to DEBUG (bm25s) reach this handler too
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)

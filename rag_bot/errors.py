"""The error hierarchy: one meaning per class, and every message says what went wrong and what to do
next. The CLI turns each into one line on stderr and an exit status (`rag_bot.cli.EXIT_STATUS`).

    RagBotError              base class; never raised itself
    ├── ConfigError          a configuration file or value is wrong (the message names the file and key path)
    ├── UsageError           a command-line argument is wrong (the message names the flag or argument)
    ├── InputError           something handed in cannot be used: a document, or a data file (pair,
    │                        example, dataset or question files; the message names the file and line)
    ├── ModelError           a model cannot be found or loaded (the message names the config key)
    └── StoreError           the vector store cannot be used as asked (missing or empty collection,
                             another model, another folder, the server down)
"""

from __future__ import annotations


class RagBotError(Exception):
    """Base class for the errors the CLI turns into one line and a non-zero exit status."""


class ConfigError(RagBotError):
    """A configuration file or value is wrong; the message names the file and key path."""


class UsageError(RagBotError):
    """A command-line argument or option is wrong; the message names it."""


class ModelError(RagBotError):
    """A model could not be found or loaded; the message names the config key to change."""


class StoreError(RagBotError):
    """The vector store cannot be used as asked (wrong model, other folder, server down, nothing ingested)."""


class InputError(RagBotError):
    """A document or data file could not be used; the message names it (and the line, for data files).

    Ingest reports a document's error and goes on with the other files. `error` is False for
    deliberate skips (an empty file, no extractable text): they are reported but do not make the
    job's exit status non-zero.
    """

    def __init__(self, reason: str, *, error: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

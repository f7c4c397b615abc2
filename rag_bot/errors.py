"""The error hierarchy. Every message says what went wrong and what to do next."""

from __future__ import annotations


class RagBotError(Exception):
    """Base class for errors that the CLI turns into one line and a non-zero exit status."""

    exit_code = 2


class ConfigError(RagBotError):
    """A configuration file or value is wrong; the message names the file and key path."""


class ModelError(RagBotError):
    """A model could not be found or loaded; the message names the config key to change."""


class StoreError(RagBotError):
    """The vector store cannot be used as asked (wrong model, other folder, server down)."""


class InputError(RagBotError):
    """A document could not be used; ingest reports it and goes on with the other files.

    `error` is False for deliberate skips (an empty file, no extractable text): they are reported
    but do not make the job's exit status non-zero.
    """

    def __init__(self, reason: str, *, error: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

"""Prompt templates: plain text files in the repository's top-level `prompts/` folder, installed as the
package `rag_bot.prompts` (pyproject.toml maps the folder; read with `importlib.resources`, so an installed
wheel and an editable install both have them), that users can copy and edit (`chat.prompts_dir`).

Each template is checked when it is loaded: a missing file, a required `{variable}` left out or an
unknown one gives one line naming the file. Write a literal brace as `{{` or `}}`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import Config
from .errors import ConfigError

BUNDLED_DIR = Path(str(resources.files("rag_bot.prompts")))  # installed as files, never zipped

# file name -> (required variables, optional variables)
TEMPLATES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "system.txt": (frozenset(), frozenset()),
    "answer.txt": (frozenset({"context", "question"}), frozenset()),
    "verify.txt": (frozenset({"context", "question", "answer"}), frozenset()),
    "unsupported.txt": (frozenset({"quotes"}), frozenset({"question"})),
    "condense.txt": (frozenset({"history", "question"}), frozenset()),
    "decline.txt": (frozenset(), frozenset({"question", "why", "topics", "hint"})),
    "not_covered.txt": (frozenset(), frozenset({"question", "why"})),
    "documents_say.txt": (frozenset({"quotes"}), frozenset({"question"})),
    "nothing_found.txt": (frozenset(), frozenset({"question"})),
    "no_answer.txt": (frozenset(), frozenset({"question"})),
}


@dataclass(frozen=True)
class Prompts:
    """The checked templates; `format` fills one in."""

    system: str
    answer: str
    verify: str
    unsupported: str
    condense: str
    decline: str
    not_covered: str
    documents_say: str
    nothing_found: str
    no_answer: str

    def format(self, name: str, **values: str) -> str:
        return getattr(self, name).format(**values).strip()


def prompts_dir(config: Config) -> Path:
    return config.chat.prompts_dir or BUNDLED_DIR


def load_prompts(folder: Path | None = None) -> Prompts:
    """Read and check every template in `folder` (default: the bundled prompts)."""
    folder = Path(folder or BUNDLED_DIR)
    texts = {}
    for name, (required, optional) in TEMPLATES.items():
        path = folder / name
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{path}: prompt template missing; copy it from {BUNDLED_DIR} "
                              "or set chat.prompts_dir to a folder that has all of "
                              f"{', '.join(TEMPLATES)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the prompt template: {exc}") from exc
        check_template(path, text, required, optional)
        texts[name.removesuffix(".txt")] = text
    return Prompts(**texts)


def check_template(path: Path, text: str, required: frozenset[str], optional: frozenset[str]) -> None:
    """Raise ConfigError when `text` lacks a required variable or uses an unknown one."""
    try:
        used = {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}; write a literal brace as {{{{ or }}}}") from exc
    allowed = required | optional
    unknown = sorted(used - allowed)
    if unknown:
        names = ", ".join("{" + name + "}" for name in sorted(allowed)) or "none"
        raise ConfigError(f"{path}: unknown variable {{{unknown[0]}}}; this template may use: {names} "
                          "(write a literal brace as {{ or }})")
    missing = sorted(required - used)
    if missing:
        raise ConfigError(f"{path}: the template must contain {{{missing[0]}}}")

"""The configuration reference page, `docs/configuration.md`, made from the config models' own field
descriptions and defaults, so that the page cannot drift from the code (a test compares them).

    python -m rag_bot.config_reference > docs/configuration.md
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import Config

INTRO = """\
# Configuration

`config.yaml` (commented, every key optional) is chosen by `rag-bot --config PATH`, else
`$RAG_BOT_CONFIG`, else `./config.yaml`, else the built-in defaults. Relative paths resolve against
the config file's folder. An unknown key or a bad value stops with one line naming the key path, and
exit status 2:

```
error: config.yaml: embedding.batch_sise: unknown key; valid keys here: model, device, batch_size, precision
```

**Scale-out**: run a Chroma server (`.venv/bin/chroma run --path /srv/chroma --host 127.0.0.1
--port 8000`) and set `store.mode: http`. The ingest record lives on the server with the collection,
so any machine with the same folder path can run the ingest (one at a time).

This page is made from the code (`python -m rag_bot.config_reference > docs/configuration.md`); a
test fails when it is out of date.
"""


def reference() -> str:
    """The whole page: the introduction, the top-level keys, then one table per section."""
    top = [(name, field) for name, field in Config.model_fields.items() if _section(field) is None]
    parts = [INTRO, "## Top level\n", _table("", top)]
    for name, field in Config.model_fields.items():
        section = _section(field)
        if section is not None:
            doc = (section.__doc__ or "").strip()
            parts.append(f"## `{name}`\n" + (f"\n{doc}\n" if doc and "Usage docs" not in doc else ""))
            parts.append(_table(f"{name}.", list(section.model_fields.items())))
    return "\n".join(parts)


def _section(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _table(prefix: str, fields: list[tuple[str, FieldInfo]]) -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in fields:
        meaning = _escaped(" ".join((field.description or "").split()))
        rows.append(f"| `{prefix}{name}` | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _escaped(text: str) -> str:
    """Markdown table text: `|` escaped, and `<`/`>` outside code spans as entities (`<data_dir>` is not a tag)."""
    pieces = re.split(r"(`[^`]*`)", text.replace("|", "\\|"))
    return "".join(piece if piece.startswith("`") else html.escape(piece, quote=False) for piece in pieces)


def _default(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, Path):
        value = str(value)
    return f"`{json.dumps(value)}`" if not isinstance(value, str) else f"`{value}`"


if __name__ == "__main__":
    print(reference(), end="")

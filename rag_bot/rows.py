"""One reader for the row files users hand in: the scope gate's labelled examples, training pairs,
and the JSONL files of BEIR datasets. Each row comes with where it is (`PATH: line N`, or `row N`
in YAML) so that the caller's checks name it; a file that cannot be read at all is one line too.

    rows, header = read_rows(path, ("csv", "jsonl"), what="pair")
    for where, row in rows:
        ...   # row is a dict (CSV: keys from the header row, stripped)
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from .errors import InputError

SUFFIXES = {"csv": (".csv",), "jsonl": (".jsonl", ".ndjson"), "yaml": (".yaml", ".yml")}


def read_rows(path: str | Path, formats: tuple[str, ...], *, what: str,
              hint: str | None = None) -> tuple[list[tuple[str, Any]], list[str]]:
    """The rows of a CSV (with a header row), JSONL or YAML (a list) file, among `formats`, each
    with where it is; and the CSV header (empty for the others). `what` names the kind of file in
    messages ("pair": "pair file not found"); `hint` says which formats to use."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    kind = next((name for name in formats if suffix in SUFFIXES[name]), None)
    if kind is None:
        hint = hint or " or ".join(f".{name}" for name in formats)
        raise InputError(f"{path}: unknown {what} file format {suffix!r}; use {hint}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    if kind == "csv":
        reader = csv.DictReader(text.splitlines())
        header = [name.strip() for name in reader.fieldnames or []]
        rows = [(f"{path}: line {reader.line_num}", {(key or "").strip(): value for key, value in row.items()})
                for row in reader]
        return rows, header
    if kind == "jsonl":
        return list(_json_lines(path, text.splitlines())), []
    import yaml

    loaded = yaml.safe_load(text) or []
    if not isinstance(loaded, list):
        raise InputError(f"{path}: expected a list of rows")
    return [(f"{path}: row {number}", row) for number, row in enumerate(loaded, 1)], []


def iter_jsonl(path: Path, required: tuple[str, ...], missing: str) -> Iterator[dict]:
    """The objects of a (possibly gzipped) JSONL file, one at a time; each must have `required` keys."""
    if not path.is_file():
        raise InputError(f"{path}: not found; {missing}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for where, row in _json_lines(path, lines):
            if not isinstance(row, dict) or any(key not in row for key in required):
                raise InputError(f"{where}: expected an object with {', '.join(required)}")
            yield row


def _json_lines(path: Path, lines: Any) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"{path}: line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None

"""File names as text: a lossless, storable form for any name, and a one-line form for messages."""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile(r"[^\S ]|[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def storable_name(name: str) -> str:
    """`name` as valid UTF-8 text. A name whose bytes are not UTF-8 (Python keeps them as surrogate
    escapes) gets each such byte written as `\\xNN`, so `x\\xff.md` stays distinct and readable."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown(name: str) -> str:
    """`name` for a one-line message: newlines, tabs and other control characters escaped."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), name)

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


def disk_name(stored: str) -> str:
    """The name on disk of a stored `storable_name`: each `\\xNN` (NN 80-ff) back to the byte it stands
    for (as a surrogate escape, which `os` functions turn into that byte)."""
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), stored)


_ESCAPED_BYTE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")
# Characters that change the order in which text is shown (right-to-left overrides and isolates): in a
# file name they make "gpj.exe" look like "exe.jpg".
BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(name: str) -> str:
    """`name` for a one-line message: newlines, tabs and other control characters escaped."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), name)

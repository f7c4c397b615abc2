"""What a loader reads a file into: `Section`s of text with the page they came from and the headings in
force, which the splitter follows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None
    markdown: bool = False
    path: tuple[tuple[int, str], ...] = ()  # (level, title) headings in force where the section starts

"""Reading a PDF as its reader sees it: one section per page and per heading, without the running
headers and footers, words broken at a line end joined again.

pypdf extracts each page's text line by line; what that leaves out is structure. Headings come
from the PDF's outline (its bookmarks) when it has one, else from type set larger than the body
text. A heading found on its page becomes a markdown heading there, so the splitter cuts at it and
each chunk carries its heading path ("2 Unified system > 2.4 The glob files"); a section that runs
over several pages keeps its path on each. Lines repeated at the top or bottom of the pages ("Chapter
4: Function reference 18", a bare page number) are left out, so they are never quoted as part of a
sentence.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .section import Section
from .tables import with_tables

Heading = tuple[int, str]  # (level, title)
_EDGE_LINES = 2  # lines at each end of a page that may be a running header or footer
_ROMAN = r"(?=[ivxlc])c{0,3}(?:xc|xl|l?x{0,3})(?:ix|iv|v?i{0,3})"  # a lower-case roman numeral up to 399
_PAGE_NUMBER = re.compile(rf"(?:[Pp]age\s+)?[-–(]?\s*(?:\d{{1,4}}|{_ROMAN})\s*[-–)]?(?:\s*(?:of|/)\s*\d{{1,4}})?")
_BROKEN_WORD = re.compile(r"\b([A-Z]?[a-z]+)-\n([a-z]+)\b")  # "man-\nagement": a word hyphenated at a line end
_WORD = re.compile(r"\w+(?:-\w+)*")
# a section number in front of a title, as a heading line reads when folded: "3.1 ", "a ", "chapter 2. "
_NUMBERING = re.compile(r"(?:(?:chapter|section|appendix)\s+)?(?:\d{1,3}|[a-z])(?:\.\d{1,3})*\.?\s+")
# a line the splitter would read as markdown (an ATX heading, a code fence): indented out of reach
_MARKDOWN_LIKE = re.compile(r"(?m)^ {0,3}(?=#{1,6}(?:[ \t]|$)|```|~~~)")
MIN_HEADING_RATIO = 1.15  # type this much larger than the body text is a heading
MAX_HEADING_CHARS = 120
_LEADERS = re.compile(r"(?:\. ?){5,}")  # a table of contents' dot leaders: ". . . . . 12"


@dataclass(frozen=True)
class PageText:
    text: str
    sizes: list[tuple[str, float]]  # text runs with their font size in points, in reading order


def read_pages(reader: Any, sizes: bool = True) -> list[PageText]:
    """Each page's text and, with `sizes` (for headings when there is no outline), its text runs with their
    font sizes."""
    pages = []
    for page in reader.pages:
        runs: list[tuple[str, float]] = []

        def visit(text: str, cm: list[float], tm: list[float], font: Any, size: float) -> None:
            if text.strip():
                runs.append((text, round(float(size) * _vertical_scale(tm, cm), 1)))

        text = page.extract_text(visitor_text=visit if sizes else None) or ""
        pages.append(PageText(text, runs))
    return pages


def _vertical_scale(tm: list[float], cm: list[float]) -> float:
    """How much the text matrix times the transformation matrix stretches a glyph's height."""
    c = tm[2] * cm[0] + tm[3] * cm[2]
    d = tm[2] * cm[1] + tm[3] * cm[3]
    return float((c * c + d * d) ** 0.5) or 1.0


def pdf_sections(reader: Any, tables: dict[int, list] | None = None) -> list[Section]:
    """The sections of a PDF: per page, cut at the headings found on it (see the module docstring);
    `tables` (page number: tables, see `ingest.tables.pdf_tables`) replace their cells' text there."""
    outline = outline_headings(reader)
    pages = read_pages(reader, sizes=not outline)  # type sizes only when there is no outline to go by
    texts = joined_words(without_running_lines([p.text for p in pages]))
    texts = [with_tables(text, tables[number]) if tables and number in tables else text
             for number, text in enumerate(texts, 1)]
    headings = outline or size_headings(pages)
    sections: list[Section] = []
    path: list[Heading] = []
    for number, text in enumerate(texts, 1):
        found = _place(text, headings.get(number, []))
        if not found and not path:
            sections.append(Section(text, page=number))
            continue
        body = _MARKDOWN_LIKE.sub("    ", text)
        lines = body.split("\n")
        for index, (level, title) in found:
            lines[index] = f"{'#' * level} {title}"
        sections.append(Section("\n".join(lines), page=number, markdown=True, path=tuple(path)))
        for _, (level, title) in found:
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
    return sections


def joined_words(pages: list[str]) -> list[str]:
    """The pages with words hyphenated at a line end joined again ("man-\nagement" -> "management"),
    unless the document writes the pair with a hyphen elsewhere and never as one word ("non-\ncommercially"
    stays "non-commercially"). Only lowercase word pieces are joined, so codes ("YYMMDDhhmm-\nhh") keep
    their hyphen and their line break."""
    words = Counter(word.casefold() for text in pages for word in _WORD.findall(text))

    def join(match: re.Match[str]) -> str:
        first, second = match.groups()
        hyphenated = f"{first}-{second}"
        keep = words[hyphenated.casefold()] > 0 and words[(first + second).casefold()] == 0
        return hyphenated if keep else first + second

    return [_BROKEN_WORD.sub(join, text) for text in pages]


def _place(text: str, wanted: list[Heading]) -> list[tuple[int, Heading]]:
    """Where each heading is on the page, in page order: the line index, and the heading with the
    line's own text as its title. The line reads as the title, or as the title after a section number
    ("3.1 Invoking asn1Parser" for "Invoking asn1Parser")."""
    raw = text.split("\n")
    lines = [_fold(line) for line in raw]
    found: list[tuple[int, Heading]] = []
    start = 0
    for level, title in wanted:
        key = _fold(title)
        for index in range(start, len(lines)):
            line = lines[index]
            if line == key or (line.endswith(key) and _NUMBERING.fullmatch(line[: len(line) - len(key)])):
                found.append((index, (level, " ".join(raw[index].split()))))
                start = index + 1
                break
    return found


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def without_running_lines(pages: list[str]) -> list[str]:
    """The pages without their running headers and footers: a line among the first or last two of a
    page that is a bare page number, or that recurs (digits aside) at the edge of another page. The
    first page keeps its lines other than page numbers: a running title is the document's title there."""
    def edges(text: str) -> list[int]:
        lines = text.split("\n")
        filled = [i for i, line in enumerate(lines) if line.strip()]
        return sorted(set(filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]))

    def key(line: str) -> str:
        return re.sub(r"\d+", "#", _fold(line))

    counts = Counter(k for text in pages for k in {key(text.split("\n")[i]) for i in edges(text)})
    out = []
    for number, text in enumerate(pages, 1):
        lines = text.split("\n")
        for i in edges(text):
            line = lines[i].strip()
            if _PAGE_NUMBER.fullmatch(line) or (number > 1 and len(pages) > 2 and counts[key(line)] >= 2):
                lines[i] = ""
        out.append("\n".join(lines).strip("\n"))
    return out


def outline_headings(reader: Any) -> dict[int, list[Heading]]:
    """The PDF's bookmarks by page number (1-based), each with its depth as the level; empty when the
    PDF has none or they cannot be read."""
    found: dict[int, list[Heading]] = {}

    def walk(items: list[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            page = reader.get_destination_page_number(item)
            if title and page is not None and page >= 0:
                found.setdefault(page + 1, []).append((min(level, 6), title))

    try:
        walk(reader.outline, 1)
    except Exception:  # a damaged outline: read the PDF without it
        return {}
    return found


def size_headings(pages: list[PageText]) -> dict[int, list[Heading]]:
    """Headings by type size when there is no outline: runs of text set at least 15% larger than the
    body text (the size most characters have), short and with a letter; the largest size is level 1."""
    weight: Counter[float] = Counter()
    for page in pages:
        for text, size in page.sizes:
            weight[size] += len(text.strip())
    if not weight:
        return {}
    body = weight.most_common(1)[0][0]
    candidates: dict[int, list[tuple[float, str]]] = {}
    for number, page in enumerate(pages, 1):
        for size, title in _runs_by_size(page.sizes):
            if (size >= body * MIN_HEADING_RATIO and 2 <= len(title) <= MAX_HEADING_CHARS
                    and re.search(r"[^\W\d_]", title) and not _LEADERS.search(title)):
                candidates.setdefault(number, []).append((size, title))
    levels = sorted({size for found in candidates.values() for size, _ in found}, reverse=True)
    return {number: [(min(levels.index(size) + 1, 6), title) for size, title in found]
            for number, found in candidates.items()}


def _runs_by_size(runs: list[tuple[str, float]]) -> list[tuple[float, str]]:
    """Neighbouring runs of the same size joined into one line of text."""
    joined: list[tuple[float, str]] = []
    for text, size in runs:
        if joined and joined[-1][0] == size:
            joined[-1] = (size, joined[-1][1] + text)
        else:
            joined.append((size, text))
    return [(size, " ".join(text.split())) for size, text in joined if text.strip()]

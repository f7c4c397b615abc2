"""Tables as Markdown tables in the chunk text, whatever format they come from (HTML, DOCX, PDF), so
that the splitter can cut them between rows and repeat the header row in each piece: a chunk about a
row still says what its columns mean.

PDF tables are found by pdfplumber on the pages that draw lines (ruled tables; a table without
rules reads as text, as before). Their cells, which pypdf's text gives as a run of words, are replaced
there by the Markdown table.
"""

from __future__ import annotations

import io
import re
from typing import Any

MIN_RULES = 4  # a page drawing fewer lines and boxes than this holds no ruled table: not searched
MIN_COVERED = 0.6  # the share of a table's words the replaced lines of page text must hold


def markdown_table(rows: list[list[Any]]) -> str:
    """Rows of cells as a Markdown table, the first row its header; cells on one line, a pipe in a
    cell escaped, short rows padded, empty rows left out."""
    cells = [[" ".join(str(cell or "").split()).replace("|", "\\|") for cell in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return ""
    width = max(len(row) for row in cells)
    cells = [row + [""] * (width - len(row)) for row in cells]
    lines = [f"| {' | '.join(cells[0])} |", "|" + "---|" * width]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in cells[1:]])


def pdf_tables(data: bytes, page_count: int) -> dict[int, list[list[list[Any]]]]:
    """The ruled tables of each page (1-based) that has any: each a list of rows of cells."""
    numbers = _ruled_pages(data, page_count)
    if not numbers:
        return {}
    import pdfplumber

    found: dict[int, list] = {}
    with pdfplumber.open(io.BytesIO(data), pages=numbers) as pdf:
        for page in pdf.pages:
            tables = [rows for rows in page.extract_tables() if len(rows) >= 2]
            if tables:
                found[page.page_number] = tables
    return found


def _ruled_pages(data: bytes, page_count: int) -> list[int]:
    """Pages that draw at least `MIN_RULES` paths (lines, boxes): the only ones a ruled table can be on.
    PDFium counts them in a fraction of the time pdfplumber takes to read a page."""
    import pypdfium2
    import pypdfium2.raw as pdfium_c

    document = pypdfium2.PdfDocument(data)
    try:
        numbers = []
        for index in range(min(len(document), page_count)):
            page = document[index]
            paths = sum(1 for _ in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH], max_depth=2))
            page.close()
            if paths >= MIN_RULES:
                numbers.append(index + 1)
        return numbers
    finally:
        document.close()


_WORD = re.compile(r"\w+")


def with_tables(text: str, tables: list[list[list[Any]]]) -> str:
    """A page's text with each table's run of cell lines replaced by the Markdown table (at the place
    of its first line); a table whose lines cannot be told apart is added after the text."""
    lines = text.split("\n")
    added = []
    for rows in tables:
        words = set(_WORD.findall(" ".join(str(cell or "") for row in rows for cell in row).casefold()))
        run = _cell_run(lines, words)
        table = markdown_table(rows)
        if run is None:
            added.append(table)
            continue
        start, end = run
        lines[start:end] = ["", table, ""]
    return "\n".join(lines + ([""] + added if added else []))


def _cell_run(lines: list[str], words: set[str]) -> tuple[int, int] | None:
    """The longest run of lines made only of the table's words, if it holds `MIN_COVERED` of them."""
    best: tuple[int, int] | None = None
    start = None
    for index, line in enumerate([*lines, "\0"]):
        found = _WORD.findall(line.casefold())
        inside = bool(found) and all(word in words for word in found) and "|" not in line
        if inside and start is None:
            start = index
        elif not inside and start is not None:
            if best is None or index - start > best[1] - best[0]:
                best = (start, index)
            start = None
    if best is None:
        return None
    held = {word for line in lines[best[0]:best[1]] for word in _WORD.findall(line.casefold())}
    return best if len(held) >= MIN_COVERED * len(words) else None

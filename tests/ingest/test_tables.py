"""Tables as Markdown tables: from HTML, DOCX and (ruled) PDF tables, cut between rows with the header
row repeated, so that a question about one row finds a chunk that still names the columns."""

from __future__ import annotations

import re
from pathlib import Path

import docx
import pytest
from fpdf import FPDF

from ingest import loaders
from ingest.pipeline import run_ingest
from ingest.split import Splitter, table_blocks
from ingest.tables import markdown_table, with_tables
from rag_bot.retriever import load_retriever
from tests.conftest import make_config

HEADER = ("Plan", "Storage", "Users", "Price per month")
PLANS = [("Free", "5 GB", "1", "$0"), ("Starter", "50 GB", "3", "$8"), ("Pro", "500 GB", "10", "$20"),
         ("Business", "2000 GB", "50", "$75"), ("Enterprise", "10000 GB", "500", "$300")]
PRO_ROW = "| Pro | 500 GB | 10 | $20 |"
HEAD_LINES = "| Plan | Storage | Users | Price per month |\n|---|---|---|---|"


def word_offsets(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in re.finditer(r"\S+", text)]


def test_markdown_table_escapes_pipes_pads_rows_and_drops_empty_ones():
    table = markdown_table([["a", "b|c", None], ["1", " two\nlines "], ["", "", ""], ["x", "y", "z"]])
    assert table == "| a | b\\|c |  |\n|---|---|---|\n| 1 | two lines |  |\n| x | y | z |"
    assert markdown_table([]) == ""


def test_a_long_table_is_cut_between_rows_each_piece_with_the_header():
    rows = [(f"plan{n}", f"{n * 10} GB", str(n), f"${n}") for n in range(40)]
    text = "Intro words before the table.\n\n" + markdown_table([HEADER, *rows]) + "\n\nWords after it.\n"
    assert [table for table, _ in table_blocks(text)] == [False, True, False]
    splitter = Splitter(word_offsets, size=60, overlap=10)
    chunks = splitter.split([loaders.Section(text, markdown=True)], "plans.md")
    pieces = [chunk.page_content for chunk in chunks if "|" in chunk.page_content]
    assert len(pieces) > 3 and all(piece.startswith(HEAD_LINES + "\n| plan") for piece in pieces)
    assert all(len(piece.split()) <= 60 for piece in pieces)
    rows_seen = [line for piece in pieces for line in piece.split("\n")[2:]]
    assert rows_seen == [f"| {' | '.join(row)} |" for row in rows]  # each row once, in order, never cut
    assert chunks[0].page_content == "Intro words before the table." and chunks[-1].page_content == "Words after it."


def test_html_tables_become_markdown_tables_in_place():
    cells = "".join(f"<tr>{''.join(f'<td>{cell}</td>' for cell in row)}</tr>" for row in PLANS)
    page = (f"<html><body><h1>Pricing</h1><p>Before.</p><table><tr>{''.join(f'<th>{h}</th>' for h in HEADER)}</tr>"
            f"{cells}</table><p>After.</p></body></html>")
    text = loaders.load_html(page.encode())[0].text
    assert f"Before.\n\n{HEAD_LINES}\n" in text and PRO_ROW in text and text.index(PRO_ROW) < text.index("After.")


def test_docx_tables_stay_where_they_are_in_the_document(tmp_path):
    document = docx.Document()
    document.add_heading("Pricing", level=1)
    document.add_paragraph("Before the table.")
    table = document.add_table(rows=1 + len(PLANS), cols=4)
    for row, values in zip(table.rows, [HEADER, *PLANS]):
        for cell, value in zip(row.cells, values):
            cell.text = value
    document.add_paragraph("After the table.")
    document.save(tmp_path / "plans.docx")
    text = loaders.load(tmp_path / "plans.docx")[0].text
    assert text.startswith("# Pricing\n\nBefore the table.\n\n" + HEAD_LINES)
    assert PRO_ROW in text and text.endswith("| Enterprise | 10000 GB | 500 | $300 |\n\nAfter the table.")


def plans_pdf(path: Path, extra_pages: int = 0) -> Path:
    """A PDF with prose around a ruled table drawn by fpdf2 (page 1), then `extra_pages` of prose."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=11)
    pdf.multi_cell(0, 7, "Plans and prices. Every plan includes email support and daily backups.")
    pdf.ln(4)
    with pdf.table() as table:
        for values in [HEADER, *PLANS]:
            row = table.row()
            for value in values:
                row.cell(value)
    pdf.ln(4)
    pdf.multi_cell(0, 7, "Prices are in US dollars and exclude tax.")
    for number in range(extra_pages):
        pdf.add_page()
        pdf.multi_cell(0, 7, f"Page {number + 2} tells how the backups are kept for thirty days in two places.")
    pdf.output(str(path))
    return path


def test_a_ruled_pdf_table_replaces_its_cells_text(tmp_path):
    sections = loaders.load(plans_pdf(tmp_path / "plans.pdf", extra_pages=1))
    first = "\n".join(section.text for section in sections if section.page == 1)
    assert f"backups.\n\n{HEAD_LINES}\n" in first and PRO_ROW in first
    assert first.count("Enterprise") == 1 and first.endswith("Prices are in US dollars and exclude tax.")
    assert [section.page for section in sections][-1] == 2


def test_table_cells_that_cannot_be_found_in_the_text_are_added_after_it():
    assert with_tables("Some text.", [[["a", "b"], ["c", "d"]]]) == "Some text.\n\n| a | b |\n|---|---|\n| c | d |"


@pytest.mark.slow
def test_a_question_about_one_row_finds_it_with_its_header(tmp_path, minilm):
    folder = tmp_path / "docs"
    folder.mkdir()
    plans_pdf(folder / "plans.pdf")
    (folder / "backups.md").write_text("# Backups\n\nBackups are kept for thirty days in two places.\n", encoding="utf-8")
    config = make_config(tmp_path, reranker={"enabled": False}, filter={"enabled": False})
    run_ingest(config, folder, progress=False, embeddings=minilm)
    found = load_retriever(config, embeddings=minilm).search("How much storage does the Pro plan have?", k=1)
    passage = found.documents[0].page_content
    assert found.documents[0].metadata["source"] == "plans.pdf"
    assert HEAD_LINES in passage and PRO_ROW in passage

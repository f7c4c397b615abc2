"""PDFs read as a reader sees them: headings from the outline or the type size, running headers and
footers left out, words broken at a line end joined (real PDFs written with fpdf2, read with pypdf)."""

from __future__ import annotations

from pathlib import Path

from ingest.loaders import load
from ingest.pdf import joined_words, without_running_lines
from ingest.split import Splitter


def _manual(outline: bool) -> bytes:
    """A three-page manual with a running header and page numbers; chapter 2 runs onto page 3."""
    from fpdf import FPDF

    class Manual(FPDF):
        def header(self) -> None:
            if self.page_no() > 1:
                self.set_font("Helvetica", size=9)
                self.cell(0, 6, f"Widget Manual, chapter {self.page_no() - 1}", new_x="LMARGIN", new_y="NEXT")

        def footer(self) -> None:
            self.set_y(-15)
            self.set_font("Helvetica", size=9)
            self.cell(0, 6, str(self.page_no()), align="C")

    pdf = Manual()

    def heading(title: str, level: int, size: int) -> None:
        if outline:
            pdf.start_section(title, level=level)
        pdf.set_font("Helvetica", "B", size)
        pdf.cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", size=11)

    def body(*lines: str) -> None:
        for line in lines:
            pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")

    pdf.add_page()
    heading("1 Getting started", 0, 16)
    body("The widget ships in a box with a charger and a short cable.",
         "# this line is a shell comment, not a heading",
         "Charge it for two hours before the first use, as the manage-",
         "ment board needs a full battery to calibrate.")
    pdf.add_page()
    heading("2 Cleaning", 0, 16)
    body("Wipe the case with a dry cloth.")
    heading("2.1 The filter", 1, 13)
    body("Rinse the filter in warm water once a month.")
    pdf.add_page()
    body("Let the filter dry for a day before putting it back.")
    return bytes(pdf.output())


def _sections(tmp_path: Path, data: bytes) -> list:
    path = tmp_path / "manual.pdf"
    path.write_bytes(data)
    return load(path)


def _chunks(sections: list) -> list[tuple[int, str, str]]:
    splitter = Splitter(lambda text: [(m.start(), m.end()) for m in __import__("re").finditer(r"\S+", text)], 200, 0)
    return [(doc.metadata["page"], doc.metadata.get("heading", ""), doc.page_content)
            for doc in splitter.split(sections, "manual.pdf")]


def test_outline_headings_cut_chunks_and_carry_over_pages(tmp_path):
    chunks = _chunks(_sections(tmp_path, _manual(outline=True)))
    assert [(page, heading) for page, heading, _ in chunks] == [
        (1, "1 Getting started"), (2, "2 Cleaning"), (2, "2 Cleaning > 2.1 The filter"), (3, "2 Cleaning > 2.1 The filter")]
    text = {heading: content for _, heading, content in chunks[:2]}
    assert text["1 Getting started"].startswith("# 1 Getting started\nThe widget ships")
    assert "management board" in text["1 Getting started"]  # the broken word joined
    assert "shell comment" in text["1 Getting started"]  # a '#' line of the PDF is text, not a heading
    assert chunks[3][2] == "Let the filter dry for a day before putting it back."  # no header, no page number


def test_headings_from_type_size_without_an_outline(tmp_path):
    chunks = _chunks(_sections(tmp_path, _manual(outline=False)))
    assert [(page, heading) for page, heading, _ in chunks] == [
        (1, "1 Getting started"), (2, "2 Cleaning"), (2, "2 Cleaning > 2.1 The filter"), (3, "2 Cleaning > 2.1 The filter")]


def test_running_lines_and_page_numbers_are_left_out():
    pages = ["Report 2024\nIntro text here.\n1", "Report 2024\nMore text.\nPage 2 of 3", "Report 2024\nEnd text.\n- 3 -"]
    assert without_running_lines(pages) == ["Report 2024\nIntro text here.", "More text.", "End text."]
    # a line that recurs at the edges of pages is left out there, and kept in the middle of a page
    pages = ["Intro\none\ntwo\nthree\nNote", "Start\nfour\nNote\nfive\nsix\nEnd", "Note\nseven\neight\nnine"]
    assert without_running_lines(pages) == [pages[0], pages[1], "seven\neight\nnine"]


def test_broken_words_joined_unless_the_document_hyphenates_them():
    pages = ["the manage-\nment of non-\ncommercial copies", "a non-commercial use; codes YYMMDD-\nhh stay"]
    assert joined_words(pages) == ["the management of non-commercial copies", "a non-commercial use; codes YYMMDD-\nhh stay"]

"""Pages without text read with real OCR (RapidOCR's packaged models): known text rendered into an
image file and into an image-only PDF page, ingested with the real MiniLM into a real Chroma store,
then found by search; with `ingest.ocr: off` such files are skipped and no OCR engine is loaded."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from ingest import loaders
from ingest.index import read_files
from ingest.pipeline import run_ingest
from rag_bot.retriever import load_retriever
from tests.conftest import make_config

pytestmark = pytest.mark.slow

SCANNED = ["The lighthouse on Karrow Point was built in 1911",
           "by the engineer Maud Ellery. Its lamp can be seen",
           "from 22 nautical miles at sea."]
PHOTO = ["Visitors may climb the 137 steps of the",
         "Halden water tower on Sundays only."]


def page_image(lines: list[str], path: Path) -> Path:
    """`lines` drawn in black on a white A4 page at 150 dpi (Pillow's own font: no system font needed)."""
    image = Image.new("RGB", (1240, 1754), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=34)
    for number, line in enumerate(lines):
        draw.text((100, 150 + number * 60), line, fill="black", font=font)
    image.save(path)
    return path


def scanned_pdf(folder: Path, lines: list[str]) -> Path:
    """A PDF whose page 1 has a text layer and whose pages 2 (the `lines`) and 3 (blank) are only images."""
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 8, "Harbour notes. This first page has a text layer about tides and moorings.")
    for picture in (page_image(lines, folder.parent / "scan.png"), page_image([], folder.parent / "blank.png")):
        pdf.add_page()
        pdf.image(str(picture), x=0, y=0, w=210)
    path = folder / "harbour.pdf"
    pdf.output(str(path))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    scanned_pdf(docs, SCANNED)
    page_image(PHOTO, docs / "notice.png")
    (docs / "plain.md").write_text("# Plain\n\nA note that has text of its own.\n", encoding="utf-8")
    return docs


def test_scanned_pages_and_images_are_read_and_found(tmp_path, folder, minilm, caplog):
    config = make_config(tmp_path, reranker={"enabled": False}, filter={"enabled": False})
    with caplog.at_level(logging.WARNING):
        report = run_ingest(config, folder, progress=False, embeddings=minilm)
    assert sorted(report.added) == ["harbour.pdf", "notice.png", "plain.md"] and not report.skipped
    said = [record.getMessage() for record in caplog.records]
    assert "harbour.pdf: reading 2 of 3 pages with OCR (no text layer)" in said
    assert "harbour.pdf: page 3 gave no text, even with OCR" in said
    assert "notice.png: reading the image with OCR" in said

    retriever = load_retriever(config, embeddings=minilm)
    built = retriever.search("Who built the lighthouse on Karrow Point?", k=1).documents[0]
    assert built.metadata["source"] == "harbour.pdf" and built.metadata["page"] == 2
    assert "Maud Ellery" in built.page_content and "1911" in built.page_content
    tower = retriever.search("How many steps does the water tower have?", k=1).documents[0]
    assert tower.metadata["source"] == "notice.png" and "137 steps" in tower.page_content
    assert read_files(config)["harbour.pdf"].reader == loaders.READER_VERSIONS[".pdf"]


def test_ocr_off_skips_images_and_leaves_bare_pages_out(tmp_path, folder, minilm):
    config = make_config(tmp_path, reranker={"enabled": False}, filter={"enabled": False}, ingest={"ocr": "off"})
    report = run_ingest(config, folder, progress=False, embeddings=minilm)
    assert sorted(report.added) == ["harbour.pdf", "plain.md"]
    sections = loaders.load(folder / "harbour.pdf", ocr=False)
    assert [section.page for section in sections] == [1]


def test_text_files_never_load_the_ocr_engine(folder):
    code = ("import sys; from pathlib import Path; from ingest import loaders; "
            f"loaders.load(Path({str(folder / 'plain.md')!r})); "
            "loaders.load(Path('examples/docs/how-retrieval-works.pdf')); "
            "print(sorted(m for m in ('rapidocr_onnxruntime', 'cv2', 'onnxruntime') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert done.stdout.strip() == "[]"


def test_grown_boxes_of_neighbouring_lines_stay_apart():
    from ingest.ocr import lines_of

    def box(left, top, right, bottom):
        return [[left, top], [right, top], [right, bottom], [left, bottom]]

    # boxes grown around 22 px type: 66 px tall, lines 26 px apart, so each overlaps the next line's box
    found = [(box(600, 100, 900, 166), "right half", 0.9), (box(90, 126, 800, 192), "second line", 0.9),
             (box(90, 101, 560, 167), "left half", 0.9), (box(90, 152, 700, 218), "third line", 0.9)]
    assert lines_of(found) == ["left half right half", "second line", "third line"]

import io

import pytest

from ingest import loaders
from ingest.loaders import load
from rag_bot.errors import InputError


def put(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_registry_covers_the_promised_formats():
    assert {".txt", ".md", ".pdf", ".html", ".docx", ".csv", ".py", ".js", ".go", ".rs", ".java", ".c"} <= loaders.extensions()


def test_text_in_other_encodings_is_decoded(tmp_path):
    text = "Größenordnung: café, naïve, déjà vu. " * 20
    assert load(put(tmp_path, "latin.txt", text.encode("latin-1")))[0].text == text
    assert load(put(tmp_path, "utf16.txt", text.encode("utf-16")))[0].text == text
    assert load(put(tmp_path, "bom.md", b"\xef\xbb\xbf" + text.encode()))[0].text == text


@pytest.mark.parametrize(
    ("name", "data", "reason", "error"),
    [
        ("empty.txt", b"", "empty file", False),
        ("blank.md", b"  \n\n ", "empty file", False),
        ("binary.txt", bytes(range(256)) * 40, "binary content, not text (is the file extension right?)", True),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >>\ngarbage", "corrupt or unreadable PDF", True),
        ("broken.docx", b"PK\x03\x04 not really a zip", "corrupt or unreadable DOCX", True),
    ],
)
def test_bad_input_raises_a_one_line_reason(tmp_path, name, data, reason, error):
    with pytest.raises(InputError) as caught:
        load(put(tmp_path, name, data))
    assert caught.value.reason.startswith(reason)
    assert caught.value.error is error
    assert "\n" not in caught.value.reason


def test_unreadable_file(tmp_path, monkeypatch):
    path = put(tmp_path, "secret.txt", b"hidden")
    monkeypatch.setattr(type(path), "read_bytes", lambda self: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(InputError, match="cannot read the file: Permission denied"):
        load(path)


def test_pdf_keeps_page_numbers(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    for word in ("alpha", "beta", "gamma"):
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.cell(0, 10, f"page about {word}")
    sections = load(put(tmp_path, "three.pdf", bytes(pdf.output())))
    assert [(s.page, s.text.strip()) for s in sections] == [
        (1, "page about alpha"), (2, "page about beta"), (3, "page about gamma")]


def test_html_keeps_visible_text_and_headings(tmp_path):
    html = (b"<html><head><title>T</title><style>p{}</style></head><body><h1>Top</h1><p>one</p>"
            b"<h2>Sub</h2><p>two</p><script>var x</script></body></html>")
    [section] = load(put(tmp_path, "page.html", html))
    assert section.markdown
    assert section.text == "# Top\n\none\n\n## Sub\n\ntwo"


def test_docx_headings_paragraphs_and_tables(tmp_path):
    import docx

    document = docx.Document()
    document.add_heading("Report", level=1)
    document.add_paragraph("First paragraph.")
    document.add_heading("Details", level=2)
    document.add_paragraph("Second paragraph.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "key", "value"
    buffer = io.BytesIO()
    document.save(buffer)
    [section] = load(put(tmp_path, "report.docx", buffer.getvalue()))
    assert section.text == "# Report\n\nFirst paragraph.\n\n## Details\n\nSecond paragraph.\n\n| key | value |\n|---|---|"


def test_rst_section_titles_become_markdown_headings(tmp_path):
    rst = (b"=====\nGuide\n=====\n\nIntro text.\n\nInstall\n-------\n\nRun pip.\n\nLinux\n~~~~~\n\nUse apt.\n\n"
           b"Usage\n-----\n\n    indented\n    --------\n\nShort\n--\n")
    [section] = load(put(tmp_path, "guide.rst", rst))
    assert section.markdown
    # levels in order of first appearance; an indented line or a too-short underline is no title
    assert [line for line in section.text.splitlines() if line.startswith("#")] == [
        "# Guide", "## Install", "### Linux", "## Usage"]
    assert "Intro text." in section.text and "    indented\n    --------" in section.text and "Short\n--" in section.text


def test_csv_rows_are_labelled_with_their_columns(tmp_path):
    [section] = load(put(tmp_path, "people.csv", b"name,born\nAda Lovelace,1815\nAlan Turing,1912\n"))
    assert section.text == "name: Ada Lovelace; born: 1815\nname: Alan Turing; born: 1912"


def test_source_code_is_text(tmp_path):
    [section] = load(put(tmp_path, "tool.py", b"def main():\n    return 42\n"))
    assert section.text == "def main():\n    return 42\n" and not section.markdown


def docx_bomb(paragraphs: int) -> bytes:
    """A real DOCX whose word/document.xml is `paragraphs` empty paragraphs: tiny packed, huge unpacked."""
    import zipfile

    import docx

    buffer = io.BytesIO()
    docx.Document().save(buffer)
    packed = io.BytesIO()
    with zipfile.ZipFile(buffer) as original, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as bomb:
        for member in original.infolist():
            data = original.read(member)
            if member.filename == "word/document.xml":
                head = data.decode().partition("<w:body>")[0]
                data = (head + "<w:body>" + "<w:p/>" * paragraphs + "</w:body></w:document>").encode()
            bomb.writestr(member, data, zipfile.ZIP_DEFLATED)
    return packed.getvalue()


def test_a_docx_decompression_bomb_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    """Issue 34, defect 3: a 59 KB DOCX whose document.xml is 40 MB of empty paragraphs passed
    ingest.max_file_mb (it checked the packed size) and took 9 minutes and 2.9 GB to read."""
    bomb = put(tmp_path, "bomb.docx", docx_bomb(40 * 1024 * 1024 // 6))
    assert bomb.stat().st_size < 200_000
    parsed = []
    monkeypatch.setitem(loaders.LOADERS, ".docx", lambda data: parsed.append(data) or [])
    with pytest.raises(InputError) as caught:
        load(bomb, max_bytes=50 * 1024 * 1024)
    assert caught.value.reason.startswith("word/document.xml inflates ")
    assert "a decompression bomb, not read" in caught.value.reason and not parsed
    with pytest.raises(InputError, match=r"it unpacks to 40.8 MB, over ingest.max_file_mb \(10 MB\); not read"):
        load(bomb, max_bytes=10 * 1024 * 1024)


def test_a_normal_docx_is_read_within_the_limit(tmp_path):
    import docx

    document = docx.Document()
    for i in range(200):
        document.add_paragraph(f"Paragraph {i} says something about the project and its documents.")
    buffer = io.BytesIO()
    document.save(buffer)
    [section] = load(put(tmp_path, "long.docx", buffer.getvalue()), max_bytes=1024 * 1024)
    assert section.text.count("Paragraph") == 200


def test_text_that_unpacks_beyond_the_limit_is_refused(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=8)
    pdf.multi_cell(0, 4, "The same sentence again and again. " * 600)  # compressed: the file is far smaller
    path = put(tmp_path, "repeated.pdf", bytes(pdf.output()))
    assert path.stat().st_size < 10_000
    with pytest.raises(InputError, match=r"its text is over 0.00954 MB \(ingest.max_file_mb\)"):
        load(path, max_bytes=10_000)
    assert load(path, max_bytes=100_000)

"""Stage 2: read a file into text sections, through a registry keyed by file extension.

Each loader returns `Section`s: text plus the page it came from (PDF) and whether the text is
markdown, so the splitter can follow headings. HTML, DOCX and reStructuredText headings are turned
into markdown headings for that reason. Anything wrong with a file raises `InputError` with a one-line reason.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from pathlib import Path
from typing import Any, Callable

from rag_bot.errors import InputError

from .ocr import IMAGE_EXTENSIONS
from .section import Section
from .tables import markdown_table

log = logging.getLogger(__name__)


Loader = Callable[[bytes], list[Section]]
LOADERS: dict[str, Loader] = {}

CODE_EXTENSIONS = (
    ".py .pyi .js .jsx .ts .tsx .java .kt .scala .c .h .cc .cpp .hpp .cs .go .rs .rb .php .swift "
    ".sh .bash .sql .r .lua .pl .m .css .scss .yaml .yml .toml .ini .cfg .tex .org"
).split()


# Loaders that read files differently from their first version, by extension: a file read by an older
# version is read again at the next ingest (only chunks whose text changed are embedded). Bump on a change.
# .pdf 3: pages without text read with OCR; 4, .html/.htm/.docx 2: tables as Markdown tables; .md 2: a
# Markdown table's pieces each start with its header row
READER_VERSIONS = {".pdf": 4, ".rst": 2, ".rest": 2, ".html": 2, ".htm": 2, ".docx": 2, ".md": 2, ".markdown": 2}


def reader_version(source: str) -> int:
    """The version of the loader that reads `source` now (1 for a loader that never changed)."""
    return READER_VERSIONS.get(Path(source).suffix.lower(), 1)


def register(*extensions: str) -> Callable[[Loader], Loader]:
    def add(loader: Loader) -> Loader:
        for extension in extensions:
            LOADERS[extension] = loader
        return loader

    return add


def extensions(ocr: bool = True) -> set[str]:
    """The extensions rag-bot reads; images only with OCR (`ingest.ocr`)."""
    return set(LOADERS) | (set(IMAGE_EXTENSIONS) if ocr else set())


def load(path: Path, max_bytes: int | None = None, ocr: bool = True,
         say: Callable[[str], Any] = log.warning) -> list[Section]:
    """Read `path` with the loader for its extension; sections with no text are dropped.

    `max_bytes` (`ingest.max_file_mb`) bounds what the file unpacks to as well as its size: a zip-based
    file (DOCX, and any such format added later) whose members add up to more, or that inflates far
    beyond its size, is refused before it is parsed, and so is text read beyond it. With `ocr`, an image
    file and the pages of a PDF with (almost) no text are read with OCR; `say` gets a line per such
    file, and one per page that still gives no text."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS and ocr:
        return _checked(_read_image(path, _read(path), say), max_bytes)
    loader = LOADERS.get(suffix)
    if loader is None:
        raise InputError(f"no loader for {path.suffix or 'files without an extension'!r}", error=False)
    data = _read(path)
    if max_bytes is not None and data.startswith(ZIP_MAGIC):
        check_unpacked_size(data, max_bytes)
    sections = loader(data)
    if suffix == ".pdf" and ocr:
        sections = _with_ocr_pages(path, data, sections, say)
    return _checked(sections, max_bytes)


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the file: {exc.strerror or exc}") from exc
    if not data.strip():
        raise InputError("empty file", error=False)
    return data


def _read_image(path: Path, data: bytes, say: Callable[[str], Any]) -> list[Section]:
    """An image file's text, each frame a page (a TIFF may hold several)."""
    from .ocr import Reader

    say(f"{path.name}: reading the image with OCR")
    frames = Reader().image_file(data)
    for number, text in enumerate(frames, 1):
        if not text.strip() and len(frames) > 1:
            say(f"{path.name}: page {number} gave no text, even with OCR")
    return [Section(text, page=number if len(frames) > 1 else None) for number, text in enumerate(frames, 1)]


def _with_ocr_pages(path: Path, data: bytes, sections: list[Section], say: Callable[[str], Any]) -> list[Section]:
    """`sections` with each page that has (almost) no text read with OCR instead."""
    from .ocr import MIN_PAGE_CHARS, Reader

    chars: dict[int, int] = {}
    for section in sections:
        if section.page is not None:
            chars[section.page] = chars.get(section.page, 0) + len(section.text.strip())
    bare = sorted(page for page, count in chars.items() if count < MIN_PAGE_CHARS)
    if not bare:
        return sections
    say(f"{path.name}: reading {len(bare)} of {len(chars)} pages with OCR (no text layer)")
    read = Reader().pdf_pages(data, bare)
    for page in bare:
        if not read[page].strip():
            say(f"{path.name}: page {page} gave no text, even with OCR")
    kept = [s for s in sections if s.page not in read or len(read[s.page].strip()) <= chars[s.page]]
    added = [Section(text, page=page) for page, text in read.items() if len(text.strip()) > chars[page]]
    return sorted(kept + added, key=lambda section: section.page or 0)


def _checked(sections: list[Section], max_bytes: int | None) -> list[Section]:
    sections = [s for s in sections if s.text.strip()]
    if max_bytes is not None and sum(len(s.text) for s in sections) > max_bytes:
        raise InputError(f"its text is over {_mb(max_bytes)} MB (ingest.max_file_mb); split the file or raise "
                         "the limit", error=False)
    if not sections:
        raise InputError("no text found in the file", error=False)
    return sections


ZIP_MAGIC = b"PK\x03\x04"
# Inflating more than this many times its packed size is a decompression bomb, not a document
# (Apache POI refuses the same ratio in Office files); small members are exempt.
MAX_INFLATE_RATIO = 100
SMALL_MEMBER = 1 << 20


def check_unpacked_size(data: bytes, max_bytes: int) -> None:
    """Refuse a zip archive whose members unpack to more than `max_bytes`, or any member over 1 MB
    that inflates more than `MAX_INFLATE_RATIO` times. The sizes are the archive's own: Python's
    zipfile never inflates a member beyond its recorded size."""
    import zipfile

    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not an archive after all: the loader says what is wrong with it
    total = sum(member.file_size for member in members)
    if total > max_bytes:
        raise InputError(f"it unpacks to {_mb(total)} MB, over ingest.max_file_mb ({_mb(max_bytes)} MB); "
                         "not read", error=False)
    for member in members:
        if member.file_size > SMALL_MEMBER and member.file_size > MAX_INFLATE_RATIO * max(member.compress_size, 1):
            raise InputError(f"{member.filename} inflates {member.file_size // max(member.compress_size, 1)} times "
                             f"(to {_mb(member.file_size)} MB): a decompression bomb, not read", error=False)


def _mb(size: int) -> str:
    return f"{size / 1048576:.3g}"


def decode_text(data: bytes) -> str:
    """Bytes to text: UTF-8 (or a BOM's encoding), else the encoding charset-normalizer detects."""
    for bom, encoding in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise InputError(f"invalid {encoding} text: {exc.reason} at byte {exc.start}") from exc
    if b"\x00" in data[:8192]:
        raise InputError("binary content, not text (is the file extension right?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        raise InputError("unknown text encoding; convert the file to UTF-8")
    # charset-normalizer often ranks Baltic code pages first for Western text; among the
    # near-clean candidates, take the most coherent one and prefer cp1252 (the common case) on ties.
    least_chaos = min(m.chaos for m in matches)
    plausible = [m for m in matches if m.chaos <= least_chaos + 0.15]
    best = max(plausible, key=lambda m: (round(m.coherence, 2), "cp1252" in m.could_be_from_charset))
    text = str(best)
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    if controls > len(text) * 0.01:
        raise InputError("binary content, not text (is the file extension right?)")
    return text


@register(".txt", ".text", *CODE_EXTENSIONS)
def load_text(data: bytes) -> list[Section]:
    return [Section(decode_text(data))]


@register(".md", ".markdown")
def load_markdown(data: bytes) -> list[Section]:
    return [Section(decode_text(data), markdown=True)]


_RST_ADORNMENT = re.compile(r"([=\-~^\"'`#*+_:.])\1{2,}")


@register(".rst", ".rest")
def load_rst(data: bytes) -> list[Section]:
    """reStructuredText, its underlined (and overlined) section titles turned into markdown headings so
    the splitter follows them; the levels go by the order in which each title style first appears."""
    lines = decode_text(data).split("\n")
    styles: list[tuple[str, bool]] = []
    out: list[str] = []
    i = 0
    while i < len(lines):
        over = _RST_ADORNMENT.fullmatch(lines[i].strip()) is not None and i + 2 < len(lines)
        at = i + 1 if over else i  # the title line
        title = lines[at].strip() if at < len(lines) else ""
        under = lines[at + 1].strip() if at + 1 < len(lines) else ""
        if (title and not _RST_ADORNMENT.fullmatch(title) and not lines[at][:1].isspace()
                and _RST_ADORNMENT.fullmatch(under) and len(under) >= len(title)
                and (not over or lines[i].strip()[0] == under[0])):
            style = (under[0], over)
            if style not in styles:
                styles.append(style)
            out += ["", "#" * min(styles.index(style) + 1, 6) + " " + title, ""]
            i = at + 2
            continue
        out.append(lines[i])
        i += 1
    return [Section("\n".join(out), markdown=True)]


@register(".pdf")
def load_pdf(data: bytes) -> list[Section]:
    """Sections per page (1-based page numbers) and per heading, running headers left out (`ingest.pdf`)."""
    from pypdf import PdfReader

    from .pdf import pdf_sections
    from .tables import pdf_tables

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InputError("encrypted PDF; save a decrypted copy to ingest it")
        return pdf_sections(reader, pdf_tables(data, len(reader.pages)))
    except InputError:
        raise
    except Exception as exc:  # pypdf raises many kinds of errors on damaged files
        raise InputError(f"corrupt or unreadable PDF ({type(exc).__name__}: {_short(exc)})") from exc


_HEADING = re.compile(r"^h([1-6])$")


@register(".html", ".htm")
def load_html(data: bytes) -> list[Section]:
    """Visible text; <h1>-<h6> become markdown headings, and the <title> heads a page without <h1>."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    if soup.title:
        soup.title.decompose()
    for tag in soup.find_all(_HEADING):
        level = int(tag.name[1])
        tag.replace_with(f"\n\n{'#' * level} {tag.get_text(' ', strip=True)}\n\n")
    for table in reversed(soup.find_all("table")):  # innermost first: a nested table becomes its cell's text
        rows = [[cell.get_text(" ", strip=True) for cell in row.find_all(["th", "td"], recursive=False)]
                for row in table.find_all("tr")]
        table.replace_with(f"\n\n{markdown_table(rows)}\n\n")
    body = soup.get_text("\n")
    body = re.sub(r"[ \t]+\n", "\n", body)
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    if title and not re.search(r"^# ", body, re.MULTILINE):
        body = f"# {title}\n\n{body}"
    return [Section(body, markdown=True)]


@register(".docx")
def load_docx(data: bytes) -> list[Section]:
    """Paragraphs and tables in document order: Word heading styles as markdown headings, tables as
    Markdown tables (the first row their header)."""
    try:
        import docx
        from docx.table import Table

        document = docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise InputError(f"corrupt or unreadable DOCX ({type(exc).__name__}: {_short(exc)})") from exc
    blocks = []
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            blocks.append(markdown_table([[cell.text for cell in row.cells] for row in item.rows]))
            continue
        text = item.text.strip()
        style = item.style.name if item.style is not None else ""
        level = 1 if style == "Title" else _heading_level(style)
        blocks.append(f"{'#' * level} {text}" if level and text else text)
    return [Section("\n\n".join(block for block in blocks if block), markdown=True)]


def _heading_level(style: str) -> int:
    match = re.match(r"Heading (\d)", style)
    return min(int(match.group(1)), 6) if match else 0


@register(".csv", ".tsv")
def load_csv(data: bytes) -> list[Section]:
    """One line per row, each value labelled with its column: `name: Ada; year: 1843`."""
    text = decode_text(data)
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}") from exc
    if not rows:
        raise InputError("empty file", error=False)
    header, body = rows[0], rows[1:]
    if not body:
        return [Section(", ".join(header))]
    lines = []
    for row in body:
        pairs = [f"{name.strip() or f'column {i + 1}'}: {value.strip()}" for i, (name, value) in enumerate(zip(header, row))]
        pairs += [value.strip() for value in row[len(header):]]
        lines.append("; ".join(p for p in pairs if p))
    return [Section("\n".join(lines))]


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

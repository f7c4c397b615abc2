"""A cited passage shown in its document: for a PDF the page as an image with the passage highlighted,
for other formats the text around the passage with the passage marked.

The passage is found by its words (case and markup aside): a source's snippet is the passage as it
reads, so its first words, in order, locate it in the page's or the document's text, and its length in
words gives where it ends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORD = re.compile(r"\w+")
LEAD_WORDS = 6  # the snippet's first words that must follow each other in the text
CONTEXT_CHARS = 900  # text shown before and after a passage in a text document
PAGE_DPI = 110  # a PDF page shown at this resolution
HIGHLIGHT = (255, 214, 0, 110)  # the marker's colour over a PDF page (RGBA)


@dataclass
class PassageView:
    """What the chat shows for one source: `image` (a PDF page, PIL) or the text `before`, `passage`
    and `after` it; `found` says whether the passage was located (else the page or the start is shown)."""

    source: str
    page: int | None = None
    image: Any = None
    before: str = ""
    passage: str = ""
    after: str = ""
    found: bool = False


def locate(text: str, snippet: str) -> tuple[int, int] | None:
    """The character span of `snippet`'s passage in `text`: from its first words, found in order, to
    as many words further as the snippet has; None when its first words are not there."""
    wanted = [word.casefold() for word in _WORD.findall(snippet.removesuffix("..."))]
    if not wanted:
        return None
    words = [(match.start(), match.end(), match.group().casefold()) for match in _WORD.finditer(text)]
    lead = wanted[:LEAD_WORDS]
    for index in range(len(words) - len(lead) + 1):
        if all(words[index + offset][2] == word for offset, word in enumerate(lead)):
            last = min(index + len(wanted), len(words)) - 1
            return words[index][0], words[last][1]
    return None


def text_view(source: str, text: str, snippet: str) -> PassageView:
    """The passage in the document's text, with up to `CONTEXT_CHARS` before and after it (cut at a
    paragraph or line break where there is one)."""
    span = locate(text, snippet)
    if span is None:
        return PassageView(source, after=text[:2 * CONTEXT_CHARS])
    start, end = span
    before, after = text[max(0, start - CONTEXT_CHARS):start], text[end:end + CONTEXT_CHARS]
    if start > CONTEXT_CHARS and "\n" in before:  # cut short: begin at a line's start
        before = before.split("\n", 1)[1]
    if end + CONTEXT_CHARS < len(text) and "\n" in after:  # cut short: end at a line's end
        after = after.rsplit("\n", 1)[0]
    return PassageView(source, before=before, passage=text[start:end], after=after, found=True)


def pdf_view(source: str, path: Path, page_number: int, snippet: str) -> PassageView:
    """PDF page `page_number` (1-based) as an image, the passage's lines highlighted where its text
    layer holds it (a scanned page is shown as it is)."""
    import pypdfium2
    from PIL import Image, ImageDraw

    document = pypdfium2.PdfDocument(path)
    try:
        if not 1 <= page_number <= len(document):
            return PassageView(source, page_number)
        page = document[page_number - 1]
        scale = PAGE_DPI / 72
        bitmap = page.render(scale=scale)
        image = bitmap.to_pil().convert("RGBA")
        bitmap.close()
        textpage = page.get_textpage()
        span = locate(textpage.get_text_range(), snippet)
        if span is not None:
            marker = Image.new("RGBA", image.size, (0, 0, 0, 0))
            draw = ImageDraw.Draw(marker)
            height = page.get_height()
            for index in range(textpage.count_rects(span[0], span[1] - span[0])):
                left, bottom, right, top = textpage.get_rect(index)
                draw.rectangle([left * scale - 2, (height - top) * scale - 2, right * scale + 2,
                                (height - bottom) * scale + 2], fill=HIGHLIGHT)
            image = Image.alpha_composite(image, marker)
        textpage.close()
        page.close()
        return PassageView(source, page_number, image=image.convert("RGB"), found=span is not None)
    finally:
        document.close()

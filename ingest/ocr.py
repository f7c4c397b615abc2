"""Reading pages that have no text layer (scanned PDF pages, photos of pages) with local OCR.

The engine is RapidOCR's ONNX Runtime package (PP-OCRv4 detection and recognition, run on the CPU);
its models ship inside the wheel, so nothing is downloaded when it runs. It is loaded on the first page
that needs it, once per process: a folder of text files never loads it. PDF pages are rendered with
pypdfium2 (PDFium) at `RENDER_DPI`.
"""

from __future__ import annotations

import io
import logging
from typing import Any

from rag_bot.errors import InputError

log = logging.getLogger(__name__)

RENDER_DPI = 300  # PDF pages are rendered at this resolution (a scanner's usual): at 200, 10 pt type lost its spaces
MIN_SCAN_DPI = 100  # a page that is one picture this sharp or sharper is read from the picture itself
MIN_PAGE_CHARS = 20  # a PDF page with fewer characters of text than this is read with OCR
UNCLIP = 2.0  # how far each detected text box is grown before it is read (RapidOCR's default: 1.6)
MIN_SCORE = 0.5  # recognised lines less certain than this are left out (RapidOCR's own default)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

class Reader:
    """Reads text from page images; its engine loads on the first page (a fraction of a second, about
    20 MB of models), so a file with text on every page never loads it."""

    def __init__(self) -> None:
        self._engine: Any = None

    def engine(self) -> Any:
        if self._engine is None:
            try:
                from rapidocr_onnxruntime import RapidOCR
            except ImportError as exc:
                raise InputError(f"reading pages without text needs the OCR engine ({exc}); run `make setup`, "
                                 "or set ingest.ocr: off to skip such pages") from exc
            # no text-direction classifier: it turned whole lines of upright print upside down (bench/ocr.py:
            # character accuracy 0.74 with it, 0.997 without, on clean pages)
            # and boxes grown by 2.0 rather than 1.6 before each line is read: with the tighter crop small
            # type lost the spaces between words (10.5 pt at 150 dpi: 0.93 -> 0.997 accuracy, bench/ocr.py)
            self._engine = RapidOCR(text_score=MIN_SCORE, use_cls=False, det_unclip_ratio=UNCLIP)
        return self._engine

    def image(self, image: Any) -> str:
        """The text of a PIL image, line by line in reading order ("" when none is found)."""
        import numpy as np

        found, _ = self.engine()(np.asarray(image.convert("RGB"))[:, :, ::-1])  # OpenCV's channel order
        return "\n".join(lines_of(found or []))

    def image_file(self, data: bytes) -> list[str]:
        """The text of each frame of an image file (a TIFF may hold several pages)."""
        from PIL import Image, ImageSequence, UnidentifiedImageError

        try:
            picture = Image.open(io.BytesIO(data))
            return [self.image(frame) for frame in ImageSequence.Iterator(picture)]
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InputError(f"not a readable image ({exc})") from exc

    def pdf_pages(self, data: bytes, numbers: list[int]) -> dict[int, str]:
        """The text of the PDF pages `numbers` (1-based), each rendered at `RENDER_DPI`."""
        import pypdfium2

        document = pypdfium2.PdfDocument(data)
        try:
            texts = {}
            for number in numbers:
                page = document[number - 1]
                texts[number] = self.image(_page_picture(page))
                page.close()
            return texts
        finally:
            document.close()


def _page_picture(page: Any) -> Any:
    """What a scanned page shows, as a PIL image: the scan itself at its own resolution when the page
    is one picture of at least `MIN_SCAN_DPI` (rendering it again blurs it), else the page rendered at
    `RENDER_DPI`."""
    import pypdfium2.raw as pdfium_c

    pictures = list(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=1))
    if len(pictures) == 1:
        try:
            scan = pictures[0].get_bitmap(render=False).to_pil()
        except Exception:  # an image format PDFium cannot hand over as pixels: render the page instead
            scan = None
        if scan is not None and scan.width >= page.get_width() / 72 * MIN_SCAN_DPI:
            return scan
    bitmap = page.render(scale=RENDER_DPI / 72)
    try:
        return bitmap.to_pil()
    finally:
        bitmap.close()


def lines_of(found: list[Any]) -> list[str]:
    """Recognised boxes joined into lines: boxes whose vertical middles are within a quarter of the smaller
    box's height are one line (the boxes are grown by `UNCLIP`, so those of neighbouring lines overlap),
    read left to right; lines top to bottom."""
    boxes = sorted(((min(y for _, y in box), max(y for _, y in box), min(x for x, _ in box), text)
                    for box, text, _score in found), key=lambda item: (item[0] + item[1]) / 2)
    lines: list[list[tuple[float, float, float, str]]] = []
    for box in boxes:
        middle, height = (box[0] + box[1]) / 2, box[1] - box[0]
        first = lines[-1][0] if lines else None
        if first is not None and abs(middle - (first[0] + first[1]) / 2) < min(height, first[1] - first[0]) / 4:
            lines[-1].append(box)
        else:
            lines.append([box])
    return [" ".join(text for *_, text in sorted(line, key=lambda item: item[2])) for line in lines]

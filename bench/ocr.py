"""OCR accuracy and speed (`ingest.ocr`), and the cost of OCR support on a folder of text files.

1. Pages of the example documents' own prose are rendered as images (Pillow's font, A4): clean pages,
   pages in small print (one with lines 1.2 apart), and "scans" (turned by 1 degree, grey, with noise),
   one at 300 dpi. Each is read the way ingest reads it: as a `.png` file and as the page of an
   image-only PDF (whose picture is read at its own resolution). Character accuracy is 1 - (edit distance
   / reference length) over the text with runs of whitespace made one space; seconds per page are wall
   time on this machine.
2. examples/docs (text only: no page needs OCR) ingested with `ingest.ocr: off` and `auto`, alternately,
   into fresh stores with the real MiniLM: the seconds per run, and whether the OCR engine was loaded.

    .venv/bin/python bench/ocr.py [--repeats 3] [--pages N]

Prints and writes bench/results/ocr.json.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from scifact import ROOT, cpu_flags, machine, save

from ingest import loaders
from ingest.pipeline import run_ingest
from rag_bot.config import Config, load_config
from rag_bot.models import LocalEmbeddings

DOCS = ROOT / "examples" / "docs"


def prose(limit: int) -> list[str]:
    """Paragraphs of the example documents' Markdown, markup left out, about `limit` characters in all."""
    text = " ".join(path.read_text(encoding="utf-8") for path in sorted(DOCS.glob("*.md")))
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"[#*`|>\[\]]|\(http[^)]*\)", " ", text)
    words = text.split()
    return textwrap.wrap(" ".join(words)[:limit], width=70)


def render(lines: list[str], size: int, scan: bool = False, dpi: int = 150, spacing: float = 1.6):
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    image = Image.new("L", (round(8.27 * dpi), round(11.69 * dpi)), 255)  # A4
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=size)
    for number, line in enumerate(lines):
        draw.text((dpi * 0.6, dpi * 0.8 + number * int(size * spacing)), line, fill=0, font=font)
    if scan:
        noise = random.Random(0)
        image = image.rotate(1.0, fillcolor=235).filter(ImageFilter.GaussianBlur(0.6))
        pixels = image.load()
        for _ in range(40000):
            x, y = noise.randrange(image.width), noise.randrange(image.height)
            pixels[x, y] = max(0, pixels[x, y] - noise.randrange(40, 120))
        image = image.point(lambda value: 30 + value * 0.8)
    return image.convert("RGB")


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def accuracy(reference: str, read: str) -> float:
    reference, read = " ".join(reference.split()), " ".join(read.split())
    return 1 - edit_distance(reference, read) / len(reference)


def pages() -> list[tuple[str, list[str], int, bool, int, float]]:
    """(name, lines, font size in pixels, scanned look, dpi, line spacing): 30 px at 150 dpi is 14 pt type,
    22 px is 10.5 pt; 42 px at 300 dpi is 10 pt, as an office scanner reads a letter."""
    lines = prose(12000)
    return [("clean 1", lines[0:24], 30, False, 150, 1.6), ("clean 2", lines[24:48], 30, False, 150, 1.6),
            ("small print", lines[48:84], 22, False, 150, 1.6), ("scan", lines[84:108], 30, True, 150, 1.6),
            ("10 pt at 300 dpi", lines[108:140], 42, True, 300, 1.6),
            ("small print, tight lines", lines[0:50], 22, False, 150, 1.2)]


def read_pages(folder: Path, count: int | None = None) -> list[dict]:
    from fpdf import FPDF

    results = []
    for name, lines, size, scan, dpi, spacing in pages()[:count]:
        png = folder / f"{name.replace(' ', '-').replace(',', '')}.png"
        render(lines, size, scan, dpi, spacing).save(png)
        pdf = FPDF()
        pdf.add_page()
        pdf.image(str(png), x=0, y=0, w=210)
        pdf_path = png.with_suffix(".pdf")
        pdf.output(str(pdf_path))
        row: dict = {"page": name, "characters": len(" ".join(" ".join(lines).split()))}
        for kind, path in (("png", png), ("pdf", pdf_path)):
            started = time.perf_counter()
            sections = loaders.load(path, say=lambda line: None)
            row[f"{kind}_seconds"] = round(time.perf_counter() - started, 2)
            row[f"{kind}_accuracy"] = round(accuracy("\n".join(lines), "\n".join(s.text for s in sections)), 4)
        results.append(row)
        print(row, flush=True)
    return results


def ingest_runs(folder: Path, repeats: int) -> dict:
    embeddings = LocalEmbeddings(load_config(Config()).embedding)
    embeddings.model
    seconds: dict[str, list[float]] = {"off": [], "auto": []}
    for run in range(repeats):
        for mode in ("off", "auto"):
            config = Config.model_validate({"data_dir": str(folder / f"{mode}-{run}"), "ingest": {"ocr": mode},
                                            "reranker": {"enabled": False}}).resolved(folder)
            started = time.perf_counter()
            run_ingest(config, DOCS, progress=False, embeddings=embeddings)
            seconds[mode].append(round(time.perf_counter() - started, 2))
    return {"files": len(list(DOCS.iterdir())), "seconds": seconds,
            "median_seconds": {mode: statistics.median(values) for mode, values in seconds.items()},
            "ratio_auto_over_off": round(statistics.median(seconds["auto"]) / statistics.median(seconds["off"]), 3),
            "ocr_engine_loaded": "rapidocr_onnxruntime" in sys.modules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pages", type=int, default=None, help="read only the first N pages (default: all 6)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "ocr.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        ingest = ingest_runs(Path(temp), args.repeats)  # first: the OCR engine is not loaded yet
        read = read_pages(Path(temp), args.pages)
    results = {"command": "python bench/ocr.py" + (f" --repeats {args.repeats}" if args.repeats != 3 else "")
               + (f" --pages {args.pages}" if args.pages else ""),
               "machine": machine(), "cpu_flags": cpu_flags(), "pages": read,
               "mean_accuracy": {kind: round(statistics.mean(row[f"{kind}_accuracy"] for row in read), 4)
                                 for kind in ("png", "pdf")},
               "median_seconds_per_page": {kind: statistics.median(row[f"{kind}_seconds"] for row in read)
                                           for kind in ("png", "pdf")},
               "text_only_ingest": ingest}
    save(results, args.out)


if __name__ == "__main__":
    main()

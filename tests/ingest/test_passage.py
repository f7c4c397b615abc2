"""A cited passage located in its document: by its words, whatever the markup and case."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.passage import locate, pdf_view, text_view
from tests.conftest import EXAMPLE_DOCS

TEXT = ("# Guide\n\nIntro line.\n\n## Install\n\nRun **make setup** once. It creates a virtual environment in "
        "`.venv` and installs the CPU build of PyTorch first.\n\nThen run make run.\n")


def test_a_passage_is_located_by_its_words_across_markup():
    start, end = locate(TEXT, "Run make setup once. It creates a virtual environment in .venv ...")
    assert TEXT[start:end] == "Run **make setup** once. It creates a virtual environment in `.venv"
    assert locate(TEXT, "words that are nowhere in it") is None and locate(TEXT, "...") is None


def test_text_view_marks_the_passage_with_its_surroundings():
    view = text_view("guide.md", TEXT, "It creates a virtual environment in .venv and installs the CPU build")
    assert view.found and view.passage.startswith("It creates") and view.passage.endswith("CPU build")
    assert view.before.endswith("Run **make setup** once. ") and view.after.startswith(" of PyTorch first.")
    missing = text_view("guide.md", TEXT, "not in the text at all")
    assert not missing.found and missing.after.startswith("# Guide")


def test_pdf_view_highlights_the_passage_on_its_page():
    path = EXAMPLE_DOCS / "how-retrieval-works.pdf"
    view = pdf_view(path.name, path, 2, "The first stage uses maximal marginal relevance (MMR). Instead of taking")
    assert view.found and view.page == 2 and view.image.width > 800
    colours = view.image.getcolors(1 << 22)
    assert sum(count for count, (r, g, b) in colours if r > 230 and 200 < g < 245 and b < 170) > 1000
    assert not pdf_view(path.name, path, 2, "nothing like this is on the page").found
    assert pdf_view(path.name, path, 99, "x").image is None


def test_a_source_outside_the_collection_is_not_shown(tmp_path, docs_copy, minilm):
    from ingest.library import Library
    from ingest.pipeline import run_ingest
    from rag_bot.errors import InputError
    from tests.conftest import make_config

    config = make_config(tmp_path, reranker={"enabled": False}, filter={"enabled": False})
    run_ingest(config, docs_copy, progress=False, embeddings=minilm)
    shelf = Library(config, minilm)
    assert shelf.view("getting-started.md", None, "Everything rag-bot stores goes into the data folder").found
    for source in ("../config.yaml", "/etc/passwd", "missing.md"):
        with pytest.raises(InputError, match="not a file of collection"):
            shelf.view(source, None, "x")
    (tmp_path / "outside.md").write_text("secret\n")
    (docs_copy / "getting-started.md").unlink()
    (docs_copy / "getting-started.md").symlink_to(tmp_path / "outside.md")
    with pytest.raises(InputError, match="leads outside"):
        shelf.view("getting-started.md", None, "secret")

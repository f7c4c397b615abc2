import pytest

import re

from ingest.loaders import Section, load
from ingest.split import PARAGRAPH, SENTENCE, WORD, Splitter, boundaries, content_hash, markdown_sections, token_windows
from tests.conftest import EXAMPLE_DOCS


def words(text: str) -> int:
    return len(text.split())


def word_offsets(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text)]


def assert_covers(text: str, chunks: list[str]) -> None:
    """Every chunk is a piece of `text`, in order, and together they cover every non-space character."""
    covered = [False] * len(text)
    position = 0
    for chunk in chunks:
        start = text.find(chunk, position)
        if start < 0:
            start = text.find(chunk)  # overlap can start before the previous chunk's end
        assert start >= 0, f"chunk is not a piece of the text: {chunk[:60]!r}"
        covered[start:start + len(chunk)] = [True] * len(chunk)
        position = start + 1
    lost = "".join(ch for ch, seen in zip(text, covered) if not seen and not ch.isspace())
    assert lost == "", f"text lost: {lost[:80]!r}"


def test_markdown_sections_follow_headings_but_not_inside_code():
    text = "intro line\n# Guide\n## Install\nrun it\n```\n# not a heading\n```\n## Use\nask\n# Other\nend\n"
    assert markdown_sections(text) == [
        ("", "intro line\n"),
        ("Guide > Install", "# Guide\n## Install\nrun it\n```\n# not a heading\n```\n"),
        ("Guide > Use", "## Use\nask\n"),
        ("Other", "# Other\nend\n"),
    ]


def test_chunks_respect_the_size_and_cover_the_text():
    text = " ".join(f"Sentence number {i} says something about topic {i % 7}." for i in range(200))
    chunks = Splitter(word_offsets, 40, 8).split_text(text)
    assert len(chunks) > 10
    assert max(words(c) for c in chunks) <= 40
    assert_covers(text, chunks)


def test_chunks_end_at_the_best_boundary_in_reach():
    paragraph = "one two three. four five six seven eight nine ten."
    text = f"{paragraph}\n\n{paragraph}\n\n{paragraph}"
    assert boundaries(text, word_offsets(text))[:5] == [PARAGRAPH, WORD, WORD, SENTENCE, WORD]
    assert Splitter(word_offsets, 25, 0).split_text(text) == [f"{paragraph}\n\n{paragraph}", paragraph]
    assert Splitter(word_offsets, 8, 0).split_text(paragraph) == ["one two three.", "four five six seven eight nine ten."]
    # Overlap starts the next chunk at the best boundary within reach: here the sentence start.
    assert Splitter(word_offsets, 12, 9).split_text(paragraph + " " + paragraph)[1].startswith("four five")


def test_windows_never_exceed_the_size_and_always_advance():
    kinds = [WORD] * 1000
    for size, overlap in [(10, 0), (10, 9), (200, 30), (7, 3)]:
        windows = token_windows(kinds, size, overlap)
        assert all(0 < end - start <= size for start, end in windows)
        assert windows[0][0] == 0 and windows[-1][1] == 1000
        assert all(b[0] > a[0] and b[0] <= a[1] for a, b in zip(windows, windows[1:]))


def test_metadata_is_complete_and_deterministic():
    sections = [Section("# Title\n\nbody one\n\n## Part\n\nbody two", markdown=True), Section("page text", page=3)]
    first = Splitter(word_offsets, 40, 8).split(sections, "dir/file.md")
    second = Splitter(word_offsets, 40, 8).split(sections, "dir/file.md")
    assert first == second
    assert [d.metadata for d in first] == [
        {"source": "dir/file.md", "heading": "Title", "chunk_index": 0, "content_hash": content_hash("# Title\n\nbody one")},
        {"source": "dir/file.md", "heading": "Title > Part", "chunk_index": 1, "content_hash": content_hash("## Part\n\nbody two")},
        {"source": "dir/file.md", "page": 3, "chunk_index": 2, "content_hash": content_hash("page text")},
    ]


@pytest.mark.slow
def test_example_docs_with_the_real_tokenizer(minilm):
    """Chunks of the real model's tokenizer stay within the size and lose no text of any example."""
    splitter = Splitter(minilm.token_offsets, 200, 30)
    for path in sorted(EXAMPLE_DOCS.iterdir()):
        for section in load(path):
            for _, text in (markdown_sections(section.text) if section.markdown else [("", section.text)]):
                chunks = splitter.split_text(text)
                assert all(minilm.count_tokens(c) <= 200 for c in chunks), path
                assert_covers(text, chunks)


@pytest.mark.parametrize(("sections", "title"), [
    ([Section("Intro line.\n\n# Getting started\n\nText.\n\n## Install\n\nMore.", markdown=True)], "Getting started"),
    ([Section("Aspirin and the heart\n\nA trial of 40 people found ...")], "Aspirin and the heart"),
    ([Section("A long first line that runs straight on\ninto the next line without a break.")], "notes"),
    ([], "notes"),
])
def test_a_document_title_is_its_first_heading_its_title_line_or_its_name(sections, title):
    from ingest.split import document_title

    assert document_title(sections, "deep/notes.txt") == title


def test_chunks_carry_their_documents_title_only_when_asked():
    splitter = Splitter(lambda text: [(m.start(), m.end()) for m in re.finditer(r"\S+", text)], 8, 2)
    sections = [Section("# Guide\n\n## Install\n\nOne two three four five six seven eight nine ten.", markdown=True)]
    assert all("title" not in chunk.metadata for chunk in splitter.split(sections, "g.md"))
    titled = splitter.split(sections, "g.md", "Guide")
    assert {chunk.metadata["title"] for chunk in titled} == {"Guide"}
    assert titled[-1].metadata["heading"] == "Guide > Install"

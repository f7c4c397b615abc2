"""Stage 3: cut sections into chunks of about `chunking.size` tokens of the embedding model's own
tokenizer, with overlap. Markdown is first cut at headings, and each chunk keeps its heading path
("Guide > Install > Linux"). Chunks are plain substrings of the document: no text is rewritten or
lost, only whitespace at chunk edges is trimmed.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from .loaders import Section

# Paragraphs, lines, sentences, clauses, words, characters: the first that fits wins.
SEPARATORS = ["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""]
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_sections(text: str) -> list[tuple[str, str]]:
    """Cut markdown at ATX headings (not inside code fences) into (heading path, text) pairs.

    A heading directly followed by another heading stays with the text that follows, so no
    chunk is a bare heading.
    """
    sections: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    has_body = False
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        fence_match = _FENCE.match(line)
        if fence_match:
            fence = None if fence == fence_match.group(1) else fence or fence_match.group(1)
        heading = None if fence or fence_match else _ATX_HEADING.match(line.rstrip("\r\n"))
        if heading:
            if has_body:
                sections.append((_join(path), "".join(lines)))
                lines, has_body = [], False
            level = len(heading.group(1))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, heading.group(2))]
        elif line.strip():
            has_body = True
        lines.append(line)
    if lines:
        sections.append((_join(path), "".join(lines)))
    return sections


def _join(path: list[tuple[int, str]]) -> str:
    return " > ".join(title for _, title in path)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Splitter:
    """Token-aware, heading-aware splitting of loaded sections into LangChain `Document`s.

    `count_tokens` measures text in tokens of the embedding model (see `LocalEmbeddings.count_tokens`).
    """

    def __init__(self, count_tokens: Callable[[str], int], size: int, overlap: int) -> None:
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=size,
            chunk_overlap=overlap,
            length_function=count_tokens,
            separators=SEPARATORS,
            keep_separator="end",
        )

    def split_text(self, text: str) -> list[str]:
        return self._splitter.split_text(text)

    def split(self, sections: list[Section], source: str) -> list[Document]:
        """Chunks with metadata: source, page (when known), heading (when known), chunk_index, content_hash."""
        chunks: list[Document] = []
        for section in sections:
            parts = markdown_sections(section.text) if section.markdown else [("", section.text)]
            for heading, text in parts:
                for piece in self.split_text(text):
                    metadata: dict[str, Any] = {"source": source}
                    if section.page is not None:
                        metadata["page"] = section.page
                    if heading:
                        metadata["heading"] = heading
                    metadata["chunk_index"] = len(chunks)
                    metadata["content_hash"] = content_hash(piece)
                    chunks.append(Document(page_content=piece, metadata=metadata))
        return chunks

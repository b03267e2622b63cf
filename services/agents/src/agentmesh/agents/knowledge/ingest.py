"""What an ingest worker process runs: parse, split and embed with the local model.

These are CPU-bound and run in the worker's process pool (``knowledge.worker``), never
on the event loop. Each worker process loads the local model once, on its first batch.
"""

from __future__ import annotations

import html.parser
import io
import os
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

_process: dict[str, Any] = {}


class _TextOnly(html.parser.HTMLParser):
    SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in {"h1", "h2", "h3"}:
            self.parts.append("\n" + "#" * int(tag[1]) + " ")
        elif tag in {"p", "div", "br", "li", "tr"}:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in {"h1", "h2", "h3", "p", "div", "li"}:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def extract_text(raw: bytes, content_type: str) -> str:
    """Text of a txt, md, html or pdf document (headings kept as markdown ``#``)."""
    if content_type == "application/pdf":
        from pypdf import PdfReader

        reader = PdfReader(io.BytesIO(raw))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    text = raw.decode("utf-8", errors="replace")
    if content_type == "text/html":
        parser = _TextOnly()
        parser.feed(text)
        return "".join(parser.parts)
    return text


def split(text: str, chunk_size: int, overlap: int) -> list[tuple[str, dict[str, str]]]:
    """Chunks with the markdown headings they sit under as metadata."""
    sections = MarkdownHeaderTextSplitter(
        [("#", "h1"), ("##", "h2"), ("###", "h3")], strip_headers=False
    ).split_text(text)
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=overlap)
    chunks = []
    for section in sections:
        for piece in splitter.split_text(section.page_content):
            if piece.strip():
                chunks.append((piece.replace("\x00", ""), dict(section.metadata)))
    return chunks


def init_process(nice: int) -> None:
    """Pool initializer: ingest yields the CPU to the service's requests."""
    if nice:
        os.nice(nice)


def prepare(raw: bytes, content_type: str, chunk_size: int, overlap: int):
    """Extract and split: the chunks with their headings."""
    return split(extract_text(raw, content_type), chunk_size, overlap)


def warm_up() -> None:
    """Load the local model and the PDF reader once, before the process takes a document."""
    import pypdf  # noqa: F401

    embed_local([])


def embed_local(texts: list[str]):
    """Unit vectors (n, 384) from the local model, loaded once per worker process."""
    if "model" not in _process:
        from agentmesh.agents.embeddings.local import LocalMiniLM

        _process["model"] = LocalMiniLM()
    return _process["model"].embed(texts)

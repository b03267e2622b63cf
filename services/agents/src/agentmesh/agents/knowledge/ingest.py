"""Parse, chunk and embed a document; runs in the background after the upload commits."""

from __future__ import annotations

import html.parser
import io
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentmesh.agents.knowledge.embedding import Embedder
from agentmesh.agents.knowledge.models import Chunk, Document, KnowledgeBase
from agentmesh.shared.events.contracts import KnowledgeDocumentIndexed
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.agents.ingest")
EMBED_BATCH = 64


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


async def ingest(
    sessionmaker: async_sessionmaker[AsyncSession], outbox: Outbox, embedder: Embedder,
    document_id: uuid.UUID,
) -> None:  # fmt: skip
    """Index one document: pending -> indexing -> ready, or failed with the reason."""
    async with sessionmaker() as session, session.begin():
        claimed = (await session.execute(
            update(Document)
            .where(Document.id == document_id, Document.status.in_(["pending", "indexing"]))
            .values(status="indexing", error=None, updated_at=datetime.now(UTC))
            .returning(Document.raw, Document.content_type, Document.knowledge_base_id)
        )).first()  # fmt: off
    if claimed is None:
        return
    raw, content_type, kb_id = claimed
    try:
        async with sessionmaker() as session:
            kb = await session.get(KnowledgeBase, kb_id)
            assert kb is not None
            chunk_size, overlap, dimension = kb.chunk_size, kb.chunk_overlap, kb.dimension
            model = await embedder.for_kb(session, kb)
        text = extract_text(raw, content_type)
        pieces = split(text, chunk_size, overlap)
        if not pieces:
            raise ValueError("the document has no text")
        vectors = []
        for start in range(0, len(pieces), EMBED_BATCH):
            batch = [content for content, _ in pieces[start : start + EMBED_BATCH]]
            vectors += await model.aembed_documents(batch)
        if any(len(vector) != dimension for vector in vectors):
            raise ValueError(
                f"the embedding model returned vectors of another size than {dimension}"
            )
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"[:500]
        logger.warning("ingest failed", extra={"document_id": str(document_id), "error": reason})
        await _finish(sessionmaker, outbox, document_id, status="failed", error=reason)
        return
    async with sessionmaker() as session, session.begin():
        await session.execute(delete(Chunk).where(Chunk.document_id == document_id))
        session.add_all(
            Chunk(document_id=document_id, knowledge_base_id=kb_id, position=i, content=content,
                  headings=headings, embedding=vector)
            for i, ((content, headings), vector) in enumerate(zip(pieces, vectors, strict=True))
        )  # fmt: off
    await _finish(sessionmaker, outbox, document_id, status="ready", chunks=len(pieces))


async def _finish(
    sessionmaker: async_sessionmaker[AsyncSession], outbox: Outbox, document_id: uuid.UUID, *,
    status: str, error: str | None = None, chunks: int = 0,
) -> None:  # fmt: skip
    async with sessionmaker() as session, session.begin():
        document = await session.get(Document, document_id)
        if document is None:  # deleted meanwhile
            return
        document.status, document.error, document.chunk_count = status, error, chunks
        document.updated_at = datetime.now(UTC)
        await outbox.add(session, KnowledgeDocumentIndexed(
            document_id=document.id, knowledge_base_id=document.knowledge_base_id,
            owner_id=document.owner_id, status=status, chunk_count=chunks, error=error,
        ))  # fmt: off


async def ingest_many(
    sessionmaker: async_sessionmaker[AsyncSession], outbox: Outbox, embedder: Embedder,
    document_ids: list[uuid.UUID],
) -> None:  # fmt: skip
    for document_id in document_ids:
        await ingest(sessionmaker, outbox, embedder, document_id)


async def resume_unfinished(
    sessionmaker: async_sessionmaker[AsyncSession], outbox: Outbox, embedder: Embedder
) -> None:
    """At start-up: index what a crash or a restart left pending or half done."""
    async with sessionmaker() as session:
        ids = list(await session.scalars(
            select(Document.id).where(Document.status.in_(["pending", "indexing"]))
        ))  # fmt: off
    await ingest_many(sessionmaker, outbox, embedder, ids)

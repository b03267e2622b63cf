from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.agents.base import Base
from agentmesh.agents.embeddings.local import DIMENSION, MODEL_NAME
from agentmesh.shared.events.envelope import uuid7


def _uuid() -> uuid.UUID:
    return uuid.UUID(uuid7())


class KnowledgeBase(Base):
    __tablename__ = "knowledge_bases"
    __table_args__ = (Index("ix_knowledge_bases_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    #: The workspace it belongs to; ``owner_id`` is who created it.
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    name: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    #: Fixed per knowledge base: changing them means re-indexing, never mixed vectors.
    #: No provider: the local all-MiniLM-L6-v2; else an OpenAI-compatible provider's model.
    embedding_provider_id: Mapped[uuid.UUID | None] = mapped_column()
    embedding_model: Mapped[str] = mapped_column(Text, default=MODEL_NAME)
    dimension: Mapped[int] = mapped_column(Integer, default=DIMENSION)
    chunk_size: Mapped[int] = mapped_column(Integer, default=800)
    chunk_overlap: Mapped[int] = mapped_column(Integer, default=100)
    #: Bumped by every re-index; chunks of an older generation are refused (migration 0007).
    embedding_generation: Mapped[int] = mapped_column(Integer, server_default="1")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("knowledge_base_id", "content_hash"),
        Index(
            "ix_documents_queue",
            "owner_id",
            "created_at",
            postgresql_where=text("status IN ('pending', 'indexing')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), index=True
    )
    #: Who uploaded it; the workspace is its knowledge base's.
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(index=True)
    filename: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(Text)
    #: The uploaded bytes, kept until indexed (and for re-indexing).
    raw: Mapped[bytes] = mapped_column(nullable=False)
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text, default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    #: The ingest job: the worker holding it, until when (renewed by its heartbeat).
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Progress while ``indexing``; ``chunks_total`` is known once the text is split.
    chunks_done: Mapped[int] = mapped_column(Integer, server_default="0")
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    doc_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Chunk(Base):
    __tablename__ = "chunks"
    __table_args__ = (
        Index(
            "ix_chunks_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
        Index("ix_chunks_tsv", "tsv", postgresql_using="gin"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(index=True)
    position: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    headings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    embedding: Mapped[Any] = mapped_column(Vector(DIMENSION))
    #: The knowledge base's ``embedding_generation`` the chunk was embedded under.
    generation: Mapped[int] = mapped_column(Integer)
    tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed("to_tsvector('english', content)", persisted=True)
    )


class KbLexeme(Base):
    """How many of a knowledge base's chunks hold a lexeme: keyword search ranks only the
    chunks holding the query's rarer words. Kept exact by triggers on ``chunks``
    (migration 0006), never written by the service."""

    __tablename__ = "kb_lexemes"

    knowledge_base_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("knowledge_bases.id", ondelete="CASCADE"), primary_key=True
    )
    lexeme: Mapped[str] = mapped_column(Text, primary_key=True)
    chunks: Mapped[int] = mapped_column(Integer)

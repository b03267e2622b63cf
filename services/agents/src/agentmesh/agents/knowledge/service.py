"""Knowledge bases: CRUD, uploads (deduplicated by content hash); search is in ``search``."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from agentmesh.agents.knowledge.embedding import check_config
from agentmesh.agents.knowledge.models import Chunk, Document, KnowledgeBase
from agentmesh.agents.knowledge.schemas import (
    DocumentOut,
    KnowledgeBaseCreate,
    KnowledgeBaseUpdate,
)
from agentmesh.agents.knowledge.search import embed_query as embed_query  # the router's, RPC's
from agentmesh.agents.knowledge.search import search as search
from agentmesh.agents.workspaces import can_see
from agentmesh.shared.access import Access
from agentmesh.shared.errors import AppError, NotFound

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}


class KnowledgeBaseNotFound(NotFound):
    type, title = "knowledge-base-not-found", "Knowledge base not found"


class UnsupportedMediaType(AppError):
    status, type, title = 415, "unsupported-media-type", "Unsupported Media Type"


def content_type_of(filename: str) -> str:
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix not in CONTENT_TYPES:
        raise UnsupportedMediaType(f"Upload txt, md, html or pdf, not {filename!r}.")
    return CONTENT_TYPES[suffix]


async def get_owned(
    session: AsyncSession, access: Access | uuid.UUID, kb_id: uuid.UUID
) -> KnowledgeBase:
    """The knowledge base if it is of the caller's workspace (``access``, or a workspace id
    for services), or the caller is a platform admin."""
    kb = await session.get(KnowledgeBase, kb_id)
    if kb is None or not can_see(access, kb.workspace_id):
        raise KnowledgeBaseNotFound("No such knowledge base.")
    return kb


async def create(session: AsyncSession, caller: Access, body: KnowledgeBaseCreate) -> KnowledgeBase:
    fields = body.model_dump()
    fields["embedding_model"] = await check_config(
        session,
        caller.workspace_id,
        body.embedding_provider_id,
        body.embedding_model,
        body.dimension,
    )
    kb = KnowledgeBase(owner_id=caller.user_id, workspace_id=caller.workspace_id, **fields)
    session.add(kb)
    await session.flush()
    await session.refresh(kb)
    return kb


async def update_kb(
    session: AsyncSession, kb: KnowledgeBase, body: KnowledgeBaseUpdate
) -> list[uuid.UUID]:
    """Apply a partial update; returns the documents to re-index (none for a rename)."""
    changes = body.model_dump(exclude_unset=True)
    model_keys = {"embedding_provider_id", "embedding_model"}
    new_model = False
    if model_keys & changes.keys():
        provider_id = changes.get("embedding_provider_id", kb.embedding_provider_id)
        model = changes.get("embedding_model")
        if model is None and provider_id == kb.embedding_provider_id:
            model = kb.embedding_model
        changes["embedding_model"] = await check_config(
            session, kb.workspace_id, provider_id, model, kb.dimension
        )
        changes["embedding_provider_id"] = provider_id
        new_model = (provider_id, changes["embedding_model"]) != (
            kb.embedding_provider_id,
            kb.embedding_model,
        )
    size = changes.get("chunk_size", kb.chunk_size)
    overlap = changes.get("chunk_overlap", kb.chunk_overlap)
    if size is None or overlap is None or overlap >= size:
        raise AppError(
            "chunk_overlap must be smaller than chunk_size.",
            status=422,
            type="validation-error",
            title="Unprocessable Content",
            extra={"field": "chunk_overlap"},
        )
    rechunk = (size, overlap) != (kb.chunk_size, kb.chunk_overlap)
    for key, value in changes.items():
        setattr(kb, key, value)
    if not (new_model or rechunk):
        return []
    return await mark_for_reindex(session, kb, drop_vectors=new_model)


async def mark_for_reindex(
    session: AsyncSession, kb: KnowledgeBase, *, drop_vectors: bool
) -> list[uuid.UUID]:
    """Every document back to ``pending`` under a new embedding generation: a job still
    indexing under the old one writes nothing (its chunks would be refused). A new model
    drops the old vectors at once, so a search never compares vectors of two models."""
    # The knowledge base row first: ingest locks it (FOR SHARE) before writing chunks.
    generation = await session.scalar(
        update(KnowledgeBase)
        .where(KnowledgeBase.id == kb.id)
        .values(embedding_generation=KnowledgeBase.embedding_generation + 1)
        .returning(KnowledgeBase.embedding_generation)
        .execution_options(synchronize_session=False)
    )
    set_committed_value(kb, "embedding_generation", generation)
    if drop_vectors:
        await session.execute(delete(Chunk).where(Chunk.knowledge_base_id == kb.id))
    ids = await session.scalars(
        update(Document)
        .where(Document.knowledge_base_id == kb.id)
        .values(
            status="pending",
            error=None,
            lease_owner=None,
            lease_expires_at=None,
            chunks_done=0,
            chunks_total=None,
        )
        .returning(Document.id)
    )
    return list(ids)


def document_out(document: Document, *, duplicate: bool = False) -> DocumentOut:
    return DocumentOut(
        id=document.id,
        knowledge_base_id=document.knowledge_base_id,
        filename=document.filename,
        content_type=document.content_type,
        size_bytes=document.size_bytes,
        status=document.status,
        error=document.error,
        chunk_count=document.chunk_count,
        chunks_done=document.chunks_done,
        chunks_total=document.chunks_total,
        metadata=document.doc_metadata,
        duplicate=duplicate,
        created_at=document.created_at,
        updated_at=document.updated_at,
    )


async def add_document(
    session: AsyncSession,
    kb: KnowledgeBase,
    *,
    raw: bytes,
    filename: str,
    metadata: dict[str, Any],
    uploader: uuid.UUID,
) -> tuple[Document, bool]:
    """A new pending document, or the existing one with the same content (no re-embedding).
    It is of the knowledge base's workspace; ``owner_id`` says who uploaded it."""
    content_type = content_type_of(filename)
    digest = hashlib.sha256(raw).hexdigest()
    existing = await session.scalar(
        select(Document).where(Document.knowledge_base_id == kb.id, Document.content_hash == digest)
    )
    if existing is not None:
        return existing, True
    document = Document(
        knowledge_base_id=kb.id,
        owner_id=uploader,
        workspace_id=kb.workspace_id,
        filename=filename,
        content_type=content_type,
        content_hash=digest,
        raw=raw,
        size_bytes=len(raw),
        status="pending",
        doc_metadata=metadata,
    )
    session.add(document)
    await session.flush()
    await session.refresh(document)
    return document, False

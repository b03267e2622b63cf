from __future__ import annotations

import json
import uuid
from typing import Any

from fastapi import APIRouter, Request, status
from pydantic import ValidationError
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from agentmesh.agents.deps import AppEmbedder, AppIngest, AppSettings
from agentmesh.agents.knowledge import service
from agentmesh.agents.knowledge.models import Document, KnowledgeBase
from agentmesh.agents.knowledge.schemas import (
    DocumentOut,
    DocumentPage,
    KnowledgeBaseCreate,
    KnowledgeBaseOut,
    KnowledgeBasePage,
    KnowledgeBaseUpdate,
    SearchRequest,
    SearchResponse,
    TextDocument,
)
from agentmesh.agents.knowledge.worker import IngestWorker
from agentmesh.agents.workspaces import FORBIDDEN, KnowledgeRead, KnowledgeWrite
from agentmesh.shared.db import Session, release
from agentmesh.shared.errors import AppError, NotFound
from agentmesh.shared.pagination import CURSOR_RESPONSES, DEFAULT_LIMIT, Cursor, Limit, paginate

router = APIRouter(prefix="/api/v1/knowledge-bases", tags=["knowledge-bases"], responses=FORBIDDEN)
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such knowledge base in your workspace"}
}


class DocumentTooLarge(AppError):
    status, type, title = 413, "payload-too-large", "Payload Too Large"


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KnowledgeBaseOut)
async def create_kb(
    body: KnowledgeBaseCreate, caller: KnowledgeWrite, session: Session
) -> KnowledgeBaseOut:
    """A knowledge base. Its embedding model and dimension are fixed per knowledge base:
    by default the local all-MiniLM-L6-v2 (384 dimensions, no network), or a model of one
    of the workspace's OpenAI-compatible providers (``embedding_provider_id`` +
    ``embedding_model``)."""
    return KnowledgeBaseOut.model_validate(await service.create(session, caller, body))


@router.get("", response_model=KnowledgeBasePage, responses=CURSOR_RESPONSES)
async def list_kbs(
    caller: KnowledgeRead, session: Session, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> KnowledgeBasePage:
    """The workspace's knowledge bases, newest first, one page at a time."""
    query = select(KnowledgeBase).where(KnowledgeBase.workspace_id == caller.workspace_id)
    kbs, next_cursor = await paginate(
        session,
        query,
        (KnowledgeBase.created_at, KnowledgeBase.id),
        limit=limit,
        cursor=cursor,
        descending=True,
    )
    items = [KnowledgeBaseOut.model_validate(kb) for kb in kbs]
    return KnowledgeBasePage(items=items, next_cursor=next_cursor)


@router.get("/{kb_id}", response_model=KnowledgeBaseOut, responses=NOT_YOURS)
async def get_kb(kb_id: uuid.UUID, caller: KnowledgeRead, session: Session):
    """One knowledge base."""
    return KnowledgeBaseOut.model_validate(await service.get_owned(session, caller, kb_id))


@router.patch("/{kb_id}", response_model=KnowledgeBaseOut, responses=NOT_YOURS)
async def update_kb(
    kb_id: uuid.UUID,
    body: KnowledgeBaseUpdate,
    caller: KnowledgeWrite,
    session: Session,
    ingest: AppIngest,
) -> KnowledgeBaseOut:
    """Rename, re-chunk or change the embedding model. A new model or chunking re-indexes
    every document in the background (their ``status`` goes back to ``pending``)."""
    kb = await service.get_owned(session, caller, kb_id)
    _schedule(ingest, session, await service.update_kb(session, kb, body))
    await session.flush()
    await session.refresh(kb)
    return KnowledgeBaseOut.model_validate(kb)


@router.post(
    "/{kb_id}/reindex",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=list[DocumentOut],
    responses=NOT_YOURS,
)
async def reindex(
    kb_id: uuid.UUID,
    caller: KnowledgeWrite,
    session: Session,
    ingest: AppIngest,
) -> list[DocumentOut]:
    """Re-embed every document with the knowledge base's current model."""
    kb = await service.get_owned(session, caller, kb_id)
    ids = await service.mark_for_reindex(session, kb, drop_vectors=False)
    _schedule(ingest, session, ids)
    rows = await session.scalars(
        select(Document)
        .where(Document.knowledge_base_id == kb_id)
        .order_by(Document.created_at)
        .execution_options(populate_existing=True)
    )
    return [service.document_out(d) for d in rows]


def _schedule(ingest: IngestWorker, session: AsyncSession, ids: list[uuid.UUID]) -> None:
    """The documents are queued in this transaction; wake the worker once it commits."""
    if ids:
        event.listen(session.sync_session, "after_commit", lambda _: ingest.wake(), once=True)


@router.delete("/{kb_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_YOURS)
async def delete_kb(kb_id: uuid.UUID, caller: KnowledgeWrite, session: Session) -> None:
    """Delete a knowledge base with its documents and chunks."""
    await session.delete(await service.get_owned(session, caller, kb_id))


@router.post(
    "/{kb_id}/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DocumentOut,
    responses={
        **NOT_YOURS,
        413: {"description": "Too large"},
        415: {"description": "Not txt, md, html or pdf"},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": TextDocument.model_json_schema()},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "metadata": {"type": "string", "description": "A JSON object"},
                        },
                    }
                },
            }
        }
    },
)
async def upload(
    kb_id: uuid.UUID,
    request: Request,
    caller: KnowledgeWrite,
    session: Session,
    settings: AppSettings,
    ingest: AppIngest,
) -> DocumentOut:
    """Add a document as a multipart ``file`` (txt, md, html, pdf) or as JSON
    ``{text, filename?, metadata?}``. Indexing runs in the background: poll the document
    until ``status`` is ``ready`` or ``failed``. The same content twice is not re-embedded."""
    # The body is read before the first query: a slow upload holds no pooled connection.
    limit = settings.max_document_bytes
    if int(request.headers.get("content-length") or 0) > limit:
        raise DocumentTooLarge(f"Documents are limited to {limit} bytes.")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_part_size=limit)
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise AppError(
                "Send the document in a multipart field named 'file'.",
                status=422,
                type="validation-error",
                title="Unprocessable Content",
            )
        raw = await file.read()
        filename = file.filename or "upload.txt"
        try:
            metadata = json.loads(str(form.get("metadata") or "{}"))
        except ValueError as exc:
            raise AppError(
                "metadata must be a JSON object.",
                status=422,
                type="validation-error",
                title="Unprocessable Content",
            ) from exc
    else:
        try:
            body = TextDocument.model_validate_json(await request.body())
        except ValidationError as exc:
            raise AppError(
                str(exc.errors()[0]["msg"]),
                status=422,
                type="validation-error",
                title="Unprocessable Content",
            ) from exc
        raw, filename, metadata = body.text.encode(), body.filename, body.metadata
    if len(raw) > limit:
        raise DocumentTooLarge(f"Documents are limited to {limit} bytes.")
    if not isinstance(metadata, dict):
        raise AppError(
            "metadata must be a JSON object.",
            status=422,
            type="validation-error",
            title="Unprocessable Content",
        )
    kb = await service.get_owned(session, caller, kb_id)
    document, duplicate = await service.add_document(
        session, kb, raw=raw, filename=filename, metadata=metadata, uploader=caller.user_id
    )
    if not duplicate:
        _schedule(ingest, session, [document.id])
    return service.document_out(document, duplicate=duplicate)


async def _document(session, caller, kb_id: uuid.UUID, document_id: uuid.UUID) -> Document:
    await service.get_owned(session, caller, kb_id)
    document = await session.get(Document, document_id)
    if document is None or document.knowledge_base_id != kb_id:
        raise NotFound("No such document.")
    return document


@router.get(
    "/{kb_id}/documents", response_model=DocumentPage, responses={**NOT_YOURS, **CURSOR_RESPONSES}
)
async def list_documents(
    kb_id: uuid.UUID,
    caller: KnowledgeRead,
    session: Session,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> DocumentPage:
    """The knowledge base's documents and their indexing status, oldest first."""
    await service.get_owned(session, caller, kb_id)
    # Never the uploaded bytes (up to the document size limit each): raiseload, so a
    # later change that touches them fails loudly instead of loading them.
    query = (
        select(Document)
        .where(Document.knowledge_base_id == kb_id)
        .options(defer(Document.raw, raiseload=True))
    )
    rows, next_cursor = await paginate(
        session, query, (Document.created_at, Document.id), limit=limit, cursor=cursor
    )
    return DocumentPage(items=[service.document_out(d) for d in rows], next_cursor=next_cursor)


@router.get("/{kb_id}/documents/{document_id}", response_model=DocumentOut, responses=NOT_YOURS)
async def get_document(
    kb_id: uuid.UUID, document_id: uuid.UUID, caller: KnowledgeRead, session: Session
) -> DocumentOut:
    """A document's ``status``: pending, indexing, ready or failed (with ``error``)."""
    return service.document_out(await _document(session, caller, kb_id, document_id))


@router.delete(
    "/{kb_id}/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_YOURS
)
async def delete_document(
    kb_id: uuid.UUID, document_id: uuid.UUID, caller: KnowledgeWrite, session: Session
) -> None:
    """Delete a document and its chunks."""
    await session.delete(await _document(session, caller, kb_id, document_id))


@router.post(
    "/{kb_id}/search",
    response_model=SearchResponse,
    responses={
        **NOT_YOURS,
        502: {"description": "The knowledge base's embedding endpoint failed"},
    },
)
async def search(
    kb_id: uuid.UUID,
    body: SearchRequest,
    caller: KnowledgeRead,
    session: Session,
    embedder: AppEmbedder,
    settings: AppSettings,
) -> SearchResponse:
    """Search chunks: ``vector``, ``keyword`` or ``hybrid`` (reciprocal rank fusion,
    the default). Results carry their score, document and position."""
    kb = await service.get_owned(session, caller, kb_id)
    model = await embedder.for_kb(session, kb)
    await release(session)  # a remote embedding model is a network call
    vector = await service.embed_query(model, body.query, body.mode)
    hits = await service.search(
        session,
        vector,
        kb,
        query=body.query,
        top_k=body.top_k,
        mode=body.mode,
        filter=body.filter,
        ef_search=settings.hnsw_ef_search,
        keyword_candidate_cap=settings.keyword_candidate_cap,
    )
    return SearchResponse(mode=body.mode, results=hits)

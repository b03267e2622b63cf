"""Ingest jobs in Postgres: claim with a lease, heartbeat, finish. Documents are the jobs.

A document waits as ``pending``; a worker claims it (``indexing``, ``lease_owner``,
``lease_expires_at``) and renews the lease while it works. A lease that runs out (its
replica died) makes the document claimable again. Claims are serialized by an advisory
lock so the per-user cap holds across replicas, and rows another transaction holds are
skipped (``FOR UPDATE SKIP LOCKED``); that SQL is ``repository.CLAIM``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentmesh.agents.knowledge import repository
from agentmesh.agents.knowledge.models import Chunk, Document, KnowledgeBase
from agentmesh.shared.events.contracts import KnowledgeDocumentIndexed
from agentmesh.shared.events.outbox import Outbox

INSERT_BATCH = 500


@dataclass
class Job:
    document_id: uuid.UUID
    knowledge_base_id: uuid.UUID
    owner_id: uuid.UUID
    workspace_id: uuid.UUID
    content_type: str
    raw: bytes
    chunk_size: int
    overlap: int
    dimension: int
    generation: int
    done: int = 0
    total: int | None = None
    lost: bool = field(default=False)


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession],
    worker: str,
    *,
    slots: int,
    per_user: int,
    lease_seconds: float,
) -> list[Job]:
    """Up to ``slots`` documents leased to ``worker``, fairly across owners."""
    if slots <= 0:
        return []
    async with sessionmaker() as session, session.begin():
        ids = await repository.claim_ids(
            session, worker, slots=slots, per_user=per_user, lease_seconds=lease_seconds
        )
        if not ids:
            return []
        rows = await session.execute(
            select(
                Document.id,
                Document.knowledge_base_id,
                Document.owner_id,
                Document.workspace_id,
                Document.content_type,
                Document.raw,
                KnowledgeBase.chunk_size,
                KnowledgeBase.chunk_overlap,
                KnowledgeBase.dimension,
                KnowledgeBase.embedding_generation,
            )
            .join(KnowledgeBase, KnowledgeBase.id == Document.knowledge_base_id)
            .where(Document.id.in_(ids))
        )
        return [Job(*row) for row in rows]


async def heartbeat(
    sessionmaker: async_sessionmaker[AsyncSession], worker: str, job: Job, lease_seconds: float
) -> bool:
    """Renew the lease and write the progress; False when the job is no longer ours (the
    document was deleted, re-indexed, or taken over after the lease ran out)."""
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(Document)
            .where(
                Document.id == job.document_id,
                Document.lease_owner == worker,
                Document.status == "indexing",
            )
            .values(
                lease_expires_at=repository.LEASE_FROM_NOW,
                chunks_done=job.done,
                chunks_total=job.total,
            )
            .execution_options(synchronize_session=False),
            {"lease": lease_seconds},
        )
        return result.rowcount == 1  # type: ignore[attr-defined]


async def finish_ready(
    sessionmaker: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    worker: str,
    job: Job,
    pieces: list[tuple[str, dict[str, Any]]],
    vectors: np.ndarray,
) -> bool:
    """Write the chunks and mark the document ready, if the job is still ours and the
    knowledge base still at the job's generation; False (nothing written) otherwise."""
    async with sessionmaker() as session, session.begin():
        # The knowledge base first (FOR SHARE), as a re-index locks it first: a re-index
        # either committed already (we see its generation) or waits for this transaction.
        generation = await session.scalar(
            select(KnowledgeBase.embedding_generation)
            .where(KnowledgeBase.id == job.knowledge_base_id)
            .with_for_update(read=True)
        )
        owner = await session.scalar(
            select(Document.lease_owner)
            .where(Document.id == job.document_id, Document.status == "indexing")
            .with_for_update()
        )
        if generation != job.generation or owner != worker:
            return False
        await session.execute(delete(Chunk).where(Chunk.document_id == job.document_id))
        for start in range(0, len(pieces), INSERT_BATCH):
            await session.execute(
                insert(Chunk),
                [
                    {
                        "document_id": job.document_id,
                        "knowledge_base_id": job.knowledge_base_id,
                        "position": i,
                        "content": content,
                        "headings": headings,
                        "embedding": vectors[i],
                        "generation": job.generation,
                    }
                    for i, (content, headings) in enumerate(
                        pieces[start : start + INSERT_BATCH], start
                    )
                ],
            )
        await _finish(session, outbox, job, status="ready", chunks=len(pieces))
        return True


async def finish_failed(
    sessionmaker: async_sessionmaker[AsyncSession],
    outbox: Outbox,
    worker: str,
    job: Job,
    error: str,
) -> bool:
    async with sessionmaker() as session, session.begin():
        owner = await session.scalar(
            select(Document.lease_owner)
            .where(Document.id == job.document_id, Document.status == "indexing")
            .with_for_update()
        )
        if owner != worker:
            return False
        await _finish(session, outbox, job, status="failed", error=error[:500])
        return True


async def _finish(
    session: AsyncSession,
    outbox: Outbox,
    job: Job,
    *,
    status: str,
    error: str | None = None,
    chunks: int = 0,
) -> None:
    await session.execute(
        update(Document)
        .where(Document.id == job.document_id)
        .values(
            status=status,
            error=error,
            chunk_count=chunks,
            lease_owner=None,
            lease_expires_at=None,
            chunks_done=chunks if status == "ready" else job.done,
            chunks_total=job.total,
            updated_at=repository.NOW,
        )
        .execution_options(synchronize_session=False)
    )
    await outbox.add(
        session,
        KnowledgeDocumentIndexed(
            document_id=job.document_id,
            knowledge_base_id=job.knowledge_base_id,
            owner_id=job.owner_id,
            workspace_id=job.workspace_id,
            status=status,
            chunk_count=chunks,
            error=error,
        ),
    )


async def release(sessionmaker: async_sessionmaker[AsyncSession], worker: str) -> None:
    """On shutdown: this worker's unfinished documents go back to the queue at once."""
    async with sessionmaker() as session, session.begin():
        await session.execute(
            update(Document)
            .where(Document.lease_owner == worker, Document.status == "indexing")
            .values(status="pending", lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )

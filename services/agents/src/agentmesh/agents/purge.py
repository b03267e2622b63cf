"""The workspace deletion saga: on ``identity.workspace.deleted`` delete the workspace's
agents (with their versions), providers, MCP servers, knowledge bases, documents (the
ingest jobs) and chunks, then say so with ``agents.workspace.purged``.

The deletes, the inbox row of the event and the outbox row of the answer are one
transaction (``ServiceRuntime.subscribe``): a redelivered event deletes nothing more and
answers once. A workspace's chats are chat's to delete (``chat.workspace.purged``).
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.agents.models import Agent
from agentmesh.agents.knowledge.models import Document, KnowledgeBase
from agentmesh.agents.mcp.models import McpServer
from agentmesh.agents.providers.models import Provider
from agentmesh.shared.db import rowcount
from agentmesh.shared.events.contracts import AgentsWorkspacePurged, WorkspaceDeleted
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.agents.purge")

#: Deleted in this order; agent versions go with their agents, chunks and kb_lexemes with
#: their documents and knowledge bases (ON DELETE CASCADE).
PURGED = (Agent, Document, KnowledgeBase, McpServer, Provider)


async def purge_workspace(session: AsyncSession, workspace_id: uuid.UUID) -> dict[str, int]:
    """Delete every row of ``workspace_id``; returns how many of each table."""
    counts: dict[str, int] = {}
    for model in PURGED:
        result = await session.execute(delete(model).where(model.workspace_id == workspace_id))
        counts[model.__tablename__] = rowcount(result)
    return counts


def on_workspace_deleted(outbox: Outbox):
    async def handle(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        assert isinstance(payload, WorkspaceDeleted)
        counts = await purge_workspace(session, payload.workspace_id)
        await outbox.add(session, AgentsWorkspacePurged(workspace_id=payload.workspace_id))
        logger.info("workspace purged", extra={"workspace_id": str(payload.workspace_id), **counts})

    return handle

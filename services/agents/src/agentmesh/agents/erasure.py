"""Erasure: on ``identity.user.deleted`` delete the user's data, then say so."""

from __future__ import annotations

import logging

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.agents.service import erase_user
from agentmesh.agents.knowledge.models import KnowledgeBase
from agentmesh.agents.mcp.models import McpServer
from agentmesh.agents.providers.models import Provider
from agentmesh.shared.events.contracts import AgentsErasureCompleted, UserDeleted
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.agents.erasure")


def on_user_deleted(outbox: Outbox):
    async def handle(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        assert isinstance(payload, UserDeleted)
        agents = await erase_user(session, payload.user_id)
        await session.execute(delete(Provider).where(Provider.owner_id == payload.user_id))
        await session.execute(delete(McpServer).where(McpServer.owner_id == payload.user_id))
        # Documents and chunks go with their knowledge bases (ON DELETE CASCADE).
        await session.execute(
            delete(KnowledgeBase).where(KnowledgeBase.owner_id == payload.user_id)
        )
        # Same transaction as the deletes and the inbox row: exactly one completion.
        await outbox.add(session, AgentsErasureCompleted(user_id=payload.user_id))
        logger.info("user erased", extra={"user_id": str(payload.user_id), "agents": agents})

    return handle

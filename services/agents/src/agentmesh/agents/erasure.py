"""Erasure: on ``identity.user.deleted`` delete the user's data, then say so.

The user's data here is their personal workspace's (its id is theirs): its agents,
providers, MCP servers and knowledge bases. What they created in shared workspaces stays
with those workspaces (``owner_id`` keeps saying who created it).
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.purge import purge_workspace
from agentmesh.shared.events.contracts import (
    AgentsErasureCompleted,
    UserDeleted,
    personal_workspace,
)
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.agents.erasure")


def on_user_deleted(outbox: Outbox):
    async def handle(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        assert isinstance(payload, UserDeleted)
        counts = await purge_workspace(session, personal_workspace(payload.user_id))
        # Same transaction as the deletes and the inbox row: exactly one completion.
        await outbox.add(session, AgentsErasureCompleted(user_id=payload.user_id))
        logger.info("user erased", extra={"user_id": str(payload.user_id), **counts})

    return handle

"""The end of the erasure saga: remove the account once agents and chat are done."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.erasure.models import Erasure
from agentmesh.identity.users.models import User
from agentmesh.identity.workspaces.lifecycle import remove_personal
from agentmesh.shared.events.contracts import AgentsErasureCompleted, ChatErasureCompleted
from agentmesh.shared.events.envelope import Envelope, EventPayload

logger = logging.getLogger("agentmesh.identity.erasure")


async def on_erasure_completed(
    session: AsyncSession, envelope: Envelope, payload: EventPayload
) -> None:
    """Record one service's completion; delete the account when both have reported.

    The row lock serializes the two completions even when two replicas handle them at
    once, so exactly one of them sees both done and deletes the account."""
    assert isinstance(payload, AgentsErasureCompleted | ChatErasureCompleted)
    erasure = await session.scalar(
        select(Erasure).where(Erasure.user_id == payload.user_id).with_for_update()
    )
    if erasure is None:
        logger.warning(
            "erasure completion for an unknown erasure",
            extra={"user_id": str(payload.user_id), "subject": envelope.type},
        )
        return
    now = datetime.now(UTC)
    if isinstance(payload, AgentsErasureCompleted):
        erasure.agents_completed_at = erasure.agents_completed_at or now
    else:
        erasure.chat_completed_at = erasure.chat_completed_at or now
    if erasure.agents_completed_at and erasure.chat_completed_at and not erasure.completed_at:
        await session.execute(delete(User).where(User.id == payload.user_id))
        await remove_personal(session, payload.user_id)
        erasure.completed_at = now
        logger.info("account erased", extra={"user_id": str(payload.user_id)})

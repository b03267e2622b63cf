"""Erasure: on ``identity.user.deleted`` delete the user's chat data, then say so."""

from __future__ import annotations

import logging

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.conversations.service import forget_converted
from agentmesh.chat.models import (
    AgentSnapshot,
    Budget,
    BudgetSpend,
    Conversation,
    Message,
    Run,
)
from agentmesh.chat.responses.erasure import erase_user as erase_responses
from agentmesh.shared.events.contracts import ChatErasureCompleted, UserDeleted
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.chat.erasure")


def on_user_deleted(outbox: Outbox):
    async def handle(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        assert isinstance(payload, UserDeleted)
        user = payload.user_id
        # Messages and runs of conversations go with them (ON DELETE CASCADE); stateless
        # runs and any stray rows are deleted by user id.
        await session.execute(delete(Conversation).where(Conversation.user_id == user))
        await session.execute(delete(Message).where(Message.user_id == user))
        await session.execute(delete(Run).where(Run.user_id == user))
        await erase_responses(session, user)
        await session.execute(delete(BudgetSpend).where(BudgetSpend.user_id == user))
        await session.execute(delete(Budget).where(Budget.user_id == user))
        # The read-model's copies of the user's agent configs (agents erases the agents
        # themselves without per-agent events).
        await session.execute(delete(AgentSnapshot).where(AgentSnapshot.owner_id == user))
        # Same transaction as the deletes and the inbox row: exactly one completion.
        await outbox.add(session, ChatErasureCompleted(user_id=user))
        forget_converted()  # this replica's copies; other replicas' expire within minutes
        logger.info("user erased", extra={"user_id": str(user)})

    return handle

"""Erasure: on ``identity.user.deleted`` delete the user's chat data, then say so.

The user's data is their own conversations, runs and budgets in every workspace, and
everything of their personal workspace (whose id is theirs). What they made in shared
workspaces for others (agents) stays with the workspace, as does the workspace's budget.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, or_
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
from agentmesh.shared.events.contracts import (
    ChatErasureCompleted,
    UserDeleted,
    personal_workspace,
)
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.chat.erasure")


def on_user_deleted(outbox: Outbox):
    async def handle(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        assert isinstance(payload, UserDeleted)
        user = payload.user_id
        personal = personal_workspace(user)

        def theirs(model):  # their own rows anywhere, and all of their personal workspace's
            return or_(model.user_id == user, model.workspace_id == personal)

        # Messages and runs of conversations go with them (ON DELETE CASCADE); stateless
        # runs and any stray rows are deleted by user id.
        await session.execute(delete(Conversation).where(theirs(Conversation)))
        await session.execute(delete(Message).where(Message.user_id == user))
        await session.execute(delete(Run).where(theirs(Run)))
        await erase_responses(session, user)
        await session.execute(delete(BudgetSpend).where(theirs(BudgetSpend)))
        await session.execute(delete(Budget).where(theirs(Budget)))
        # The read-model's copies of the personal workspace's agents (agents erases them
        # without per-agent events); agents they made in shared workspaces stay.
        await session.execute(delete(AgentSnapshot).where(AgentSnapshot.workspace_id == personal))
        # Same transaction as the deletes and the inbox row: exactly one completion.
        await outbox.add(session, ChatErasureCompleted(user_id=user))
        forget_converted()  # this replica's copies; other replicas' expire within minutes
        logger.info("user erased", extra={"user_id": str(user)})

    return handle

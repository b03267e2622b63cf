"""The workspace deletion saga, chat's step: on ``identity.workspace.deleted`` delete the
workspace's conversations (with their messages and runs), its other runs (usage), its
budgets, its stored responses and its agents' snapshots, then say so with ``chat.workspace.purged``.

The deletes, the outbox row and the inbox row commit in one transaction: a redelivery
finds the event in the inbox and does nothing, so the purge is published once.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.conversations.service import forget_converted
from agentmesh.chat.models import AgentSnapshot, Budget, BudgetSpend, Conversation, Run
from agentmesh.chat.responses.tables import ConversationExtraItem, ConversationMeta, StoredResponse
from agentmesh.shared.db import rowcount
from agentmesh.shared.events.contracts import ChatWorkspacePurged, WorkspaceDeleted
from agentmesh.shared.events.envelope import Envelope, EventPayload
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.chat.workspaces")


def on_workspace_deleted(outbox: Outbox):
    async def handle(session: AsyncSession, envelope: Envelope, payload: EventPayload) -> None:
        assert isinstance(payload, WorkspaceDeleted)
        workspace = payload.workspace_id
        counts = {}
        # Messages go with their conversations, and so do their runs (ON DELETE CASCADE);
        # stateless runs (/v1/chat/completions) by workspace.
        # Stored responses (the Responses API) and conversation items and metadata (the
        # Conversations API) too.
        models = (
            StoredResponse,
            ConversationExtraItem,
            ConversationMeta,
            Conversation,
            Run,
            BudgetSpend,
            Budget,
            AgentSnapshot,
        )
        for model in models:
            deleted = await session.execute(delete(model).where(model.workspace_id == workspace))
            counts[model.__tablename__] = rowcount(deleted)
        await outbox.add(session, ChatWorkspacePurged(workspace_id=workspace))
        forget_converted()  # this replica's copies; other replicas' expire within minutes
        logger.info("workspace purged", extra={"workspace_id": str(workspace), **counts})

    return handle

"""A user's erasure reaches what the Responses and Conversations APIs kept of them."""

from __future__ import annotations

import uuid

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.chat.responses.tables import ConversationExtraItem, StoredResponse


async def erase_user(session: AsyncSession, user_id: uuid.UUID) -> None:
    """The user's stored responses and conversation items, in every workspace (their
    conversations, with their metadata, go with the native conversations)."""
    await session.execute(delete(StoredResponse).where(StoredResponse.user_id == user_id))
    await session.execute(
        delete(ConversationExtraItem).where(ConversationExtraItem.user_id == user_id)
    )

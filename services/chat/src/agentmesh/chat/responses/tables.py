"""Tables of the Responses and Conversations APIs (``/v1/responses``, ``/v1/conversations``).

A response is a run (``runs``, which keeps its usage) plus what OpenAI's API returns of it:
its input and output items and the parameters echoed. ``store: false`` responses have no
row here (their run and usage stay). A Conversations API conversation is a native
conversation (``conversations``), with its workspace and metadata kept here beside it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.chat.models import Base


class StoredResponse(Base):
    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_workspace_created", "workspace_id", "created_at"),)

    #: The run's id (``resp_<hex>`` in the API).
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column()
    #: ``model`` as the request named it (an agent id or slug).
    model: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)
    previous_response_id: Mapped[uuid.UUID | None] = mapped_column()
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL"), index=True
    )
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The request's parameters as the response echoes them (instructions, metadata, ...).
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    #: This request's input items, each with its id.
    input_items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    output: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    incomplete_details: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConversationMeta(Base):
    """The Conversations API's side of a conversation: its workspace and metadata."""

    __tablename__ = "conversation_meta"

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column(index=True)
    user_id: Mapped[uuid.UUID] = mapped_column()
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ConversationExtraItem(Base):
    """A Conversations API item with no native message to hold it (``function_call``,
    ``function_call_output``, system and developer messages, ...). Items list as one
    sequence with the conversation's messages, in id (time) order."""

    __tablename__ = "conversation_items"
    __table_args__ = (Index("ix_conversation_items_conversation_id_id", "conversation_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    user_id: Mapped[uuid.UUID] = mapped_column()
    item: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

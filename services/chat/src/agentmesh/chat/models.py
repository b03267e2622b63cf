"""Tables of the ``chat`` schema.

A run's usage lives on its ``runs`` row (tokens, model, provider, latency, time to first
token, cost), written in the same statement as the assistant message: "the usage row
commits with the message". Budgets count spend per member (or whole workspace) and month
in ``budget_spend``.

Every row belongs to a workspace (``workspace_id``; a personal workspace's id is its
owner's user id); ``user_id`` is who created it. Messages go with their conversation.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agentmesh.shared.db import make_metadata
from agentmesh.shared.events.envelope import uuid7
from agentmesh.shared.events.tables import event_tables

SCHEMA = "chat"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


metadata = Base.metadata
EVENT_TABLES = event_tables(metadata)


def new_id() -> uuid.UUID:
    return uuid.UUID(uuid7())


#: ``user_id`` of a budget (and its spend rows) that limits a whole workspace, not one
#: member: no user has the nil UUID.
WHOLE_WORKSPACE = uuid.UUID(int=0)


class AgentSnapshot(Base):
    """The read-model of ``agents.agent.*``: the newest config version seen per agent."""

    __tablename__ = "agent_snapshots"

    agent_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(index=True)
    version: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_user_created", "user_id", "created_at", "id"),
        # Lists: the caller's own conversations in their workspace, newest first.
        Index(
            "ix_conversations_workspace_user_created", "workspace_id", "user_id", "created_at", "id"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    user_id: Mapped[uuid.UUID] = mapped_column()
    agent_id: Mapped[uuid.UUID] = mapped_column(index=True)
    title: Mapped[str | None] = mapped_column(Text)
    auto_title: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Summary of the turns before ``summary_upto`` (memory with summarization on).
    summary: Mapped[str | None] = mapped_column(Text)
    summary_upto: Mapped[uuid.UUID | None] = mapped_column()
    #: What the agent's instructions may name: ``{{key}}`` and the zone of ``{{date}}``.
    variables: Mapped[dict[str, str]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    timezone: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Message(Base):
    """One turn. The branch shown is the chain of ``parent_id`` from the newest message;
    a regenerated answer or an edited question is a new sibling, the old one a variant."""

    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_conversation_created", "conversation_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(index=True)
    parent_id: Mapped[uuid.UUID | None] = mapped_column()
    role: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text, default="")
    #: ``[{id, name, args, result}]`` of an assistant turn, in call order.
    tool_calls: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    #: ``[{document_id, chunk_id, filename, position, score}]``: the knowledge base
    #: passages an assistant turn's model was given (``runs/retrieval.py``).
    citations: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, default=list, server_default=text("'[]'::jsonb")
    )
    status: Mapped[str] = mapped_column(Text, default="completed")
    run_id: Mapped[uuid.UUID | None] = mapped_column()
    agent_version: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Run(Base):
    """A generation, with its usage. ``conversation_id`` is null for stateless
    ``/v1/chat/completions`` runs."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_user_created", "user_id", "created_at"),
        # Usage reports: a workspace's (or a member's in it) runs in a time range.
        Index("ix_runs_workspace_created", "workspace_id", "created_at"),
        # The orphan sweep looks only at running runs, by heartbeat.
        Index(
            "ix_runs_running_heartbeat",
            "heartbeat_at",
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    user_id: Mapped[uuid.UUID] = mapped_column()
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    agent_id: Mapped[uuid.UUID] = mapped_column()
    agent_version: Mapped[int] = mapped_column(Integer)
    user_message_id: Mapped[uuid.UUID | None] = mapped_column()
    assistant_message_id: Mapped[uuid.UUID | None] = mapped_column()
    status: Mapped[str] = mapped_column(Text, default="running")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    model: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    #: Null when the agent's own model answered, else the position in its ``fallbacks``.
    fallback_index: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=0)
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column()
    ttft_ms: Mapped[float | None] = mapped_column()
    last_event_id: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: Refreshed by the replica executing the run; a stale one means that replica stopped.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RunPause(Base):
    """A run waiting for a person to approve a tool call (status ``requires_action``):
    what any replica needs to go on with it (``runs.approvals``)."""

    __tablename__ = "run_pauses"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    #: The prompt so far, the calls still to make (the one to decide first), the answer so
    #: far and the plan's parts.
    state: Mapped[dict[str, Any]] = mapped_column(JSONB)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Budget(Base):
    """Monthly limits of a member in a workspace, or (``user_id`` ``WHOLE_WORKSPACE``) of
    the whole workspace. Null: no limit of that kind."""

    __tablename__ = "budgets"

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    monthly_tokens: Mapped[int | None] = mapped_column(Integer)
    monthly_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BudgetSpend(Base):
    """Spend and in-flight reservations under a budget (a member's in a workspace, or the
    whole workspace's), per calendar month (UTC)."""

    __tablename__ = "budget_spend"

    workspace_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=0)
    reserved_tokens: Mapped[int] = mapped_column(Integer, default=0)


# The Responses and Conversations APIs' tables, on the same metadata (Alembic sees them).
from agentmesh.chat.responses import tables as _responses_tables  # noqa: E402, F401

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.agents.base import Base
from agentmesh.shared.events.envelope import uuid7


class Agent(Base):
    """An agent: its current config is the row of ``agent_versions`` at ``version``."""

    __tablename__ = "agents"
    __table_args__ = (
        Index("ix_agents_workspace_created", "workspace_id", "created_at"),
        Index("ix_agents_tags", "tags", postgresql_using="gin"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=lambda: uuid.UUID(uuid7()))
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    #: The workspace it belongs to; ``owner_id`` is who created it.
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)
    #: The current version's name and tags, copied here for listing and filtering.
    name: Mapped[str] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default=text("'{}'"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AgentVersion(Base):
    """One immutable version of an agent's config."""

    __tablename__ = "agent_versions"

    agent_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: The version this one restored, if it was a restore.
    restored_from: Mapped[int | None] = mapped_column(Integer)

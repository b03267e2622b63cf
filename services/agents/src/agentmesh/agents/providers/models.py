from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.agents.base import Base
from agentmesh.shared.events.envelope import uuid7


class Provider(Base):
    """A model provider of one user. The API key is stored encrypted, never in clear."""

    __tablename__ = "providers"
    __table_args__ = (Index("ix_providers_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=lambda: uuid.UUID(uuid7()))
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    #: The workspace it belongs to; ``owner_id`` is who created it.
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    kind: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(Text)
    base_url: Mapped[str | None] = mapped_column(Text)
    #: The API version an ``azure_openai`` provider is called with (``2024-10-21``).
    api_version: Mapped[str | None] = mapped_column(Text)
    api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    api_key_last4: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

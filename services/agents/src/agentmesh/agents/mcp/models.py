from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Index, LargeBinary, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.agents.base import Base
from agentmesh.shared.events.envelope import uuid7


class McpServer(Base):
    """A remote MCP server of one user. The auth header's value is stored encrypted."""

    __tablename__ = "mcp_servers"
    __table_args__ = (Index("ix_mcp_servers_workspace_created", "workspace_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=lambda: uuid.UUID(uuid7()))
    owner_id: Mapped[uuid.UUID] = mapped_column(index=True)
    #: The workspace it belongs to; ``owner_id`` is who created it.
    workspace_id: Mapped[uuid.UUID] = mapped_column()
    name: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    auth_header_name: Mapped[str | None] = mapped_column(Text)
    auth_header_value_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    auth_header_value_last4: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

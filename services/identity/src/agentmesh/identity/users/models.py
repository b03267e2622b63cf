from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Text, func
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.identity.base import Base
from agentmesh.shared.events.envelope import uuid7


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=lambda: uuid.UUID(uuid7()))
    #: Normalized (trimmed, domain lower-cased), as the user gave it: for display.
    email: Mapped[str] = mapped_column(Text)
    #: The email case-folded (``email_key``): what lookups compare, unique.
    email_key: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    #: None for an account made by OpenID Connect sign-in (no password).
    password_hash: Mapped[str | None] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text), default=lambda: ["user"])
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    deactivated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The workspace the last login or switch was bound to (checked at each use).
    last_workspace_id: Mapped[uuid.UUID | None] = mapped_column()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

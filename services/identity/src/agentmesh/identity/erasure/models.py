from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.identity.base import Base


class Erasure(Base):
    """The erasure saga of one user. Outlives the account row, so admins can audit it."""

    __tablename__ = "erasures"

    user_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    #: SHA-256 of the erased email, to answer "was this address erased?" without keeping it.
    email_hash: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    agents_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    chat_completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    @property
    def status(self) -> str:
        return "completed" if self.completed_at else "pending"

"""Workspaces, their members (one role each) and pending invitations."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.identity.base import Base
from agentmesh.shared.events.envelope import uuid7


def _uuid() -> uuid.UUID:
    return uuid.UUID(uuid7())


class Workspace(Base):
    """The unit of ownership: agents, providers, knowledge and usage belong to one."""

    __tablename__ = "workspaces"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(Text)
    #: Every user has exactly one personal workspace; it cannot be shared or deleted.
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )
    #: Set when deletion starts; a deleted workspace is gone for every API.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The deletion saga: when agents and chat reported the workspace's data deleted (the
    #: row goes once both have).
    agents_purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    chat_purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (
        Index("ix_memberships_user_id", "user_id"),
        Index(
            "uq_memberships_one_personal",
            "user_id",
            unique=True,
            postgresql_where=text("personal"),
        ),
    )

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(Text)
    #: Copied from the workspace, so "one personal workspace per user" is an index.
    personal: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Invitation(Base):
    """An invitation by email; the token (shown once) is kept only as a hash."""

    __tablename__ = "invitations"
    __table_args__ = (
        Index("ix_invitations_workspace_id", "workspace_id"),
        Index("ix_invitations_email", "email"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    #: Normalized like account emails.
    email: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

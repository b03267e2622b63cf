"""What OpenID Connect sign-in keeps: linked identities, flows in progress, login codes.

Flows and login codes live in the database, not in a replica's memory: the browser that
started a flow may come back to another replica, and a code must be usable once across
all of them."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from agentmesh.identity.base import Base
from agentmesh.shared.events.envelope import uuid7


def _uuid() -> uuid.UUID:
    return uuid.UUID(uuid7())


class OidcIdentity(Base):
    """A provider account (``provider``, ``subject``) linked to one user."""

    __tablename__ = "oidc_identities"
    __table_args__ = (
        UniqueConstraint("provider", "subject"),
        UniqueConstraint("user_id", "provider"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=_uuid)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    #: The verified email the provider gave at the last sign-in.
    email: Mapped[str | None] = mapped_column(Text)
    linked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OidcFlow(Base):
    """One authorization request, from ``/authorize`` until its callback (used once).

    Nothing secret is stored: the state is kept as a hash, and the PKCE verifier and the
    nonce are derived from a secret held only in the browser's signed cookie."""

    __tablename__ = "oidc_flows"

    #: SHA-256 of the ``state`` sent to the provider.
    state_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(Text)
    return_to: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    consumed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: SHA-256 of the authorization code the callback brought: a code is used once.
    code_hash: Mapped[str | None] = mapped_column(Text, unique=True)


class LoginCode(Base):
    """A one-time code handed to a ``return_to`` page, swapped for a token pair."""

    __tablename__ = "oidc_login_codes"

    #: SHA-256 of the code; the code itself is never stored.
    code_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

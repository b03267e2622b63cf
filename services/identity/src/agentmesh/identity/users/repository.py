"""The users domain's read queries: the caller's own profile in one statement.

``GET /users/me`` reads the user, the revocation of the token's login session and the
linked OpenID Connect identities in one Core statement on the autocommit connection
(``shared.db.ReadConnection``): no ORM loading, no transaction, one round trip. The
statement is built once; a request only binds its values.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Result, Row, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from agentmesh.identity.auth.models import RefreshTokenFamily
from agentmesh.identity.oidc.models import OidcIdentity
from agentmesh.identity.users.models import User

#: One row per linked identity (one with null identity columns when none is linked).
_PROFILE = (
    select(
        User.id,
        User.email,
        User.name,
        User.roles,
        User.is_active,
        User.created_at,
        User.updated_at,
        (any_(User.roles) == "admin").label("is_admin"),
        User.password_hash.is_not(None).label("has_password"),
        RefreshTokenFamily.revoked_at,
        OidcIdentity.provider,
        OidcIdentity.email.label("identity_email"),
        OidcIdentity.linked_at,
    )
    .select_from(User)
    .outerjoin(RefreshTokenFamily, RefreshTokenFamily.id == bindparam("session_id"))
    .outerjoin(OidcIdentity, OidcIdentity.user_id == User.id)
    .where(User.id == bindparam("user_id"))
    .order_by(OidcIdentity.linked_at, OidcIdentity.provider)
)


@dataclass(frozen=True)
class Profile:
    #: ``id``, ``email``, ``name``, ``roles``, ``is_active``, ``is_admin``, ``created_at``,
    #: ``updated_at``, ``has_password`` (what ``UserOut.of`` reads).
    user: Row[Any]
    #: When the token's login session was ended (None: live, or the token has none).
    session_revoked_at: datetime | None
    #: ``provider``, ``identity_email``, ``linked_at``; by link time, then provider.
    identities: list[Row[Any]]


async def profile(
    conn: AsyncConnection, user_id: uuid.UUID, session_id: uuid.UUID | None
) -> Profile | None:
    """The user ``user_id`` with the revocation of ``session_id`` and their identities."""
    result: Result[Any] = await conn.execute(
        _PROFILE, {"user_id": user_id, "session_id": session_id}
    )
    rows = result.all()
    if not rows:
        return None
    first = rows[0]
    return Profile(
        user=first,
        session_revoked_at=first.revoked_at,
        identities=[row for row in rows if row.provider is not None],
    )

"""The OpenID Connect identities linked to an account."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.oidc.errors import IdentityNotLinked, LastSignInMethod
from agentmesh.identity.oidc.models import OidcIdentity
from agentmesh.identity.users.models import User


async def unlink(session: AsyncSession, user: User, provider: str) -> None:
    """Remove the link to ``provider``; refused (409) when the account would be left with
    no password and no other linked identity."""
    # Lock the user row: two concurrent unlinks must not each see the other's identity.
    await session.execute(select(User.id).where(User.id == user.id).with_for_update())
    identity = await session.scalar(
        select(OidcIdentity).where(
            OidcIdentity.user_id == user.id, OidcIdentity.provider == provider
        )
    )
    if identity is None:
        raise IdentityNotLinked(f"No {provider} identity is linked to your account.")
    others = await session.scalar(
        select(func.count())
        .select_from(OidcIdentity)
        .where(OidcIdentity.user_id == user.id, OidcIdentity.provider != provider)
    )
    if user.password_hash is None and not others:
        raise LastSignInMethod(
            "This is the only way left to sign in to your account; it cannot be unlinked."
        )
    await session.execute(delete(OidcIdentity).where(OidcIdentity.id == identity.id))

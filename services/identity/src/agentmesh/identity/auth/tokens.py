"""Issuing and verifying access tokens (EdDSA JWTs) inside identity."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

import jwt
from cachetools import TLRUCache
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.identity.auth.models import RefreshTokenFamily
from agentmesh.identity.keys.service import SigningKeyStore
from agentmesh.identity.users.models import User
from agentmesh.shared.auth import Principal
from agentmesh.shared.errors import Unauthorized
from agentmesh.shared.settings import CommonSettings

#: Verified tokens kept (the least recently used beyond that are verified again).
VERIFIED_CACHE_SIZE = 10_000

#: A verified token's claims (read-only: one mapping is shared by every request using it).
Claims = Mapping[str, Any]


class Verified(NamedTuple):
    principal: Principal
    claims: Claims


class TokenIssuer:
    """Signs access tokens with the active key and verifies identity's own callers."""

    def __init__(self, keys: SigningKeyStore, common: CommonSettings, *, ttl_seconds: int):
        self.keys = keys
        self.issuer = common.jwt_issuer
        self.audience = common.jwt_audience
        self.ttl_seconds = ttl_seconds
        #: Tokens whose signature and claims were checked, until their ``exp`` (wall
        #: clock): a token never changes, so an EdDSA check and two JSON decodes per
        #: request buy nothing. Revocation is not cached (``refuse_unless_live``).
        self._verified: TLRUCache[str, Verified] = TLRUCache(
            maxsize=VERIFIED_CACHE_SIZE, ttu=_until_exp, timer=time.time
        )

    async def issue(
        self,
        session: AsyncSession,
        *,
        user: User,
        scopes: Iterable[str] = (),
        family_id: uuid.UUID | None = None,
        api_key_id: str | None = None,
        roles: Iterable[str] | None = None,
        not_after: datetime | None = None,
        ttl_seconds: int | None = None,
        workspace_id: uuid.UUID | None = None,
        workspace_role: str | None = None,
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        key = await self.keys.active(session)
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl_seconds or self.ttl_seconds)
        if not_after is not None and not_after < expires:
            expires = not_after
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": str(user.id),
            "roles": sorted(roles if roles is not None else user.roles),
            "scopes": sorted(scopes),
            "jti": uuid.uuid4().hex,
            "iat": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        if family_id is not None:
            claims["sid"] = str(family_id)
        if api_key_id is not None:
            claims["akid"] = api_key_id
        if workspace_id is not None and workspace_role is not None:
            claims["wid"] = str(workspace_id)
            claims["wrole"] = workspace_role
        token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
        return token, max(int((expires - now).total_seconds()), 0)

    async def decode(self, db: AsyncSession | AsyncConnection, token: str) -> Verified:
        """The token's signature and claims checked, or ``Unauthorized``: cached per token
        until its ``exp``. Not a revocation check: a caller must pass what the database
        says of the user and the session to ``refuse_unless_live`` on every request."""
        hit = self._verified.get(token)
        if hit is not None:
            return hit
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        public_key = await self.keys.public_key(db, kid) if kid else None
        if public_key is None:
            raise Unauthorized("invalid token")
        try:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        principal = Principal(
            user_id=uuid.UUID(claims["sub"]),
            roles=frozenset(claims.get("roles", [])),
            scopes=tuple(claims.get("scopes", [])),
            token_id=claims.get("jti", ""),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            api_key_id=claims.get("akid"),
            workspace_id=uuid.UUID(claims["wid"]) if claims.get("wid") else None,
            workspace_role=claims.get("wrole"),
            token=token,
        )
        verified = Verified(principal, MappingProxyType(claims))
        self._verified[token] = verified
        return verified

    async def verify(self, session: AsyncSession, token: str) -> tuple[Principal, Claims]:
        """Verify a token for identity's own routes, including session revocation: a
        token whose login was logged out, or whose user is deactivated, stops working."""
        principal, claims = await self.decode(session, token)
        if "sid" in claims:
            # The user and their login session in one round trip.
            family = RefreshTokenFamily.id == uuid.UUID(claims["sid"])
            row = (
                await session.execute(
                    select(User, RefreshTokenFamily.revoked_at)
                    .outerjoin(RefreshTokenFamily, family)
                    .where(User.id == principal.user_id)
                )
            ).first()
            user, revoked = (None, None) if row is None else row
        else:
            user, revoked = await session.get(User, principal.user_id), None
        refuse_unless_live(active=user is not None and user.is_active, revoked_at=revoked)
        return principal, claims


def refuse_unless_live(*, active: bool, revoked_at: datetime | None) -> None:
    """``Unauthorized`` unless the token's user exists and is active and its login session
    (if it has one) was not ended: checked against the database on every request."""
    if not active:
        raise Unauthorized("account is not active")
    if revoked_at is not None:
        raise Unauthorized("session ended")


def _until_exp(_token: str, verified: Verified, _now: float) -> float:
    return verified.principal.expires_at.timestamp()

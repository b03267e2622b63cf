"""Issuing and verifying access tokens (EdDSA JWTs) inside identity."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.identity.auth.models import RefreshTokenFamily
from agentmesh.identity.keys.service import SigningKeyStore
from agentmesh.identity.users.models import User
from agentmesh.shared.auth import Principal
from agentmesh.shared.errors import Unauthorized
from agentmesh.shared.settings import CommonSettings


class TokenIssuer:
    """Signs access tokens with the active key and verifies identity's own callers."""

    def __init__(self, keys: SigningKeyStore, common: CommonSettings, *, ttl_seconds: int):
        self.keys = keys
        self.issuer = common.jwt_issuer
        self.audience = common.jwt_audience
        self.ttl_seconds = ttl_seconds

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

    async def verify(self, session: AsyncSession, token: str) -> tuple[Principal, dict]:
        """Verify a token for identity's own routes, including session revocation: a
        token whose login was logged out, or whose user is deactivated, stops working."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token") from exc
        public_key = await self.keys.public_key(session, kid) if kid else None
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
        user_id = uuid.UUID(claims["sub"])
        if "sid" in claims:
            # The user and their login session in one round trip.
            family = RefreshTokenFamily.id == uuid.UUID(claims["sid"])
            row = (
                await session.execute(
                    select(User, RefreshTokenFamily.revoked_at)
                    .outerjoin(RefreshTokenFamily, family)
                    .where(User.id == user_id)
                )
            ).first()
            user, revoked = (None, None) if row is None else row
        else:
            user, revoked = await session.get(User, user_id), None
        if user is None or not user.is_active:
            raise Unauthorized("account is not active")
        if revoked is not None:
            raise Unauthorized("session ended")
        principal = Principal(
            user_id=user.id,
            roles=frozenset(claims.get("roles", [])),
            scopes=tuple(claims.get("scopes", [])),
            token_id=claims.get("jti", ""),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            api_key_id=claims.get("akid"),
            workspace_id=uuid.UUID(claims["wid"]) if claims.get("wid") else None,
            workspace_role=claims.get("wrole"),
            token=token,
        )
        return principal, claims

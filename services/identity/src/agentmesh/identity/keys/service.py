"""Ed25519 signing keys: created on first start, rotated by ``agentmesh keys rotate``,
published in the JWKS until the last token they signed has expired."""

from __future__ import annotations

import base64
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from agentmesh.identity.crypto import KeyEncryption
from agentmesh.identity.keys import repository
from agentmesh.identity.keys.models import SigningKey

#: Tokens are accepted this long past ``exp`` by verifiers; keep keys published that long.
VERIFIER_LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    private_key: Ed25519PrivateKey


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(kid: str, public_key: Ed25519PublicKey) -> dict[str, Any]:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": _b64url(raw),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    }


class SigningKeyStore:
    """Reads and writes signing keys; caches the active one for ``cache_seconds``."""

    def __init__(self, kek: KeyEncryption, *, token_ttl_seconds: int, cache_seconds: float):
        self.kek = kek
        self.token_ttl_seconds = token_ttl_seconds
        self.cache_seconds = cache_seconds
        self._active: ActiveKey | None = None
        self._active_loaded_at = 0.0
        self._public: dict[str, Ed25519PublicKey] = {}

    def _new_key(self) -> SigningKey:
        private_key = Ed25519PrivateKey.generate()
        kid = uuid.uuid4().hex[:16]
        pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return SigningKey(
            kid=kid,
            private_key_encrypted=self.kek.encrypt(pem),
            public_jwk=public_jwk(kid, private_key.public_key()),
        )

    async def ensure_key(self, session: AsyncSession) -> None:
        """Create the first key unless one is active (safe with many replicas starting)."""
        await repository.lock_keys(session)
        active = await session.scalar(
            select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1)
        )
        if active is None:
            session.add(self._new_key())
            await session.flush()

    async def rotate(self, session: AsyncSession) -> SigningKey:
        """Make a new key the signer; older keys stay published until their tokens expire."""
        await repository.lock_keys(session)
        now = datetime.now(UTC)
        for key in await session.scalars(select(SigningKey).where(SigningKey.retired_at.is_(None))):
            key.retired_at = now
        key = self._new_key()
        session.add(key)
        await session.flush()
        self._active = None
        return key

    async def active(self, session: AsyncSession) -> ActiveKey:
        """The key that signs new tokens."""
        fresh = time.monotonic() - self._active_loaded_at < self.cache_seconds
        if self._active is not None and fresh:
            return self._active
        row = await session.scalar(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None))
            .order_by(SigningKey.created_at.desc())
            .limit(1)
        )
        if row is None:
            await self.ensure_key(session)
            return await self.active(session)
        pem = self.kek.decrypt(row.private_key_encrypted)
        private_key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(private_key, Ed25519PrivateKey)
        self._active = ActiveKey(kid=row.kid, private_key=private_key)
        self._active_loaded_at = time.monotonic()
        return self._active

    def _published_since(self) -> datetime:
        grace = self.token_ttl_seconds + VERIFIER_LEEWAY_SECONDS
        return datetime.now(UTC) - timedelta(seconds=grace)

    def _is_published(self) -> ColumnElement[bool]:
        """Active keys plus retired ones whose tokens may still be valid."""
        return or_(SigningKey.retired_at.is_(None), SigningKey.retired_at > self._published_since())

    async def published(self, session: AsyncSession) -> list[SigningKey]:
        """Active keys plus retired ones whose tokens may still be valid."""
        return list(
            await session.scalars(
                select(SigningKey)
                .where(self._is_published())
                .order_by(SigningKey.created_at.desc())
            )
        )

    async def jwks(self, session: AsyncSession) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in await self.published(session)]}

    async def public_key(
        self, db: AsyncSession | AsyncConnection, kid: str
    ) -> Ed25519PublicKey | None:
        """The published key ``kid``, read through a session or a (read-only) connection."""
        if kid in self._public:
            return self._public[kid]
        published = select(SigningKey.kid, SigningKey.public_jwk).where(self._is_published())
        for key_id, jwk in await db.execute(published):
            loaded = jwt.PyJWK(jwk).key
            assert isinstance(loaded, Ed25519PublicKey)
            self._public[key_id] = loaded
        return self._public.get(kid)

"""Ed25519 signing keys and access-token claims, for tests that need tokens without identity.

``SigningKey`` signs EdDSA JWTs with a ``kid`` header exactly as identity does, and gives
the public JWK to serve in a JWKS; ``make_claims`` builds the claims identity puts in an
access token.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"
DEFAULT_ISSUER = "agentmesh-identity"
DEFAULT_AUDIENCE = "agentmesh"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKey:
    """A freshly generated Ed25519 key with a ``kid``; signs EdDSA JWTs as identity does."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex[:12]
        self.private_key = Ed25519PrivateKey.generate()

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half of the key."""
        return self.private_key.public_key()

    @property
    def public_raw(self) -> bytes:
        """The 32 raw bytes of the public key (the JWK's ``x``, undecoded)."""
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_pem(self) -> bytes:
        """The public key as a PEM ``SubjectPublicKeyInfo``."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, Any]:
        """The public key as a JWK, as identity publishes it (no private ``d``)."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(self.public_raw),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        """An EdDSA JWT of ``claims`` with this key's ``kid`` in the header.

        ``headers`` are merged into the header; a header given as ``None`` is removed
        (``headers={"kid": None}`` signs a token without a ``kid``).
        """
        merged = {"kid": self.kid, **(headers or {})}
        header = {name: value for name, value in merged.items() if value is not None}
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers=header)


def jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """A JWKS document publishing the public halves of ``keys``."""
    return {"keys": [key.public_jwk() for key in keys]}


def make_claims(
    sub: str | uuid.UUID,
    *,
    issuer: str = DEFAULT_ISSUER,
    audience: str = DEFAULT_AUDIENCE,
    roles: Iterable[str] | None = ("user",),
    scopes: Iterable[str] | None = (),
    ttl: float = 900,
    **extra: Any,
) -> dict[str, Any]:
    """The claims of an access token for user ``sub``, expiring in ``ttl`` seconds.

    ``extra`` claims are added or override the defaults; a claim given as ``None`` is
    left out (``make_claims(user_id, exp=None)`` has no ``exp``, ``scopes=None`` no
    ``scopes``). A negative ``ttl`` gives an already expired token.
    """
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": str(sub),
        "roles": None if roles is None else list(roles),
        "scopes": None if scopes is None else list(scopes),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + int(ttl),
        **extra,
    }
    return {name: value for name, value in claims.items() if value is not None}

"""Ed25519 signing keys for tests that need tokens without running identity."""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class SigningKey:
    """A fresh Ed25519 key with a ``kid``; signs EdDSA JWTs as identity does."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex[:12]
        self.private_key = Ed25519PrivateKey.generate()

    @property
    def public_raw(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def public_jwk(self) -> dict[str, Any]:
        x = base64.urlsafe_b64encode(self.public_raw).rstrip(b"=").decode()
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": x,
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }

    def sign(self, claims: dict[str, Any], *, headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(
            claims,
            self.private_key,
            algorithm="EdDSA",
            headers={"kid": self.kid, **(headers or {})},
        )


def make_claims(
    sub: str | uuid.UUID,
    *,
    issuer: str = "agentmesh-identity",
    audience: str = "agentmesh",
    roles: tuple[str, ...] = ("user",),
    scopes: tuple[str, ...] = (),
    ttl: int = 900,
    **extra: Any,
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": issuer,
        "aud": audience,
        "sub": str(sub),
        "roles": list(roles),
        "scopes": list(scopes),
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + ttl,
        **extra,
    }

"""Password hashing (Argon2id), secret hashing and encryption of keys at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cached_property

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agentmesh.shared.crypto import SecretBox


class Passwords:
    """Argon2id with the OWASP password-storage parameters (m=19 MiB, t=2, p=1).

    Hashing takes tens of milliseconds of CPU, so it runs in worker threads (argon2
    releases the GIL), at most ``concurrency`` at once: the event loop keeps serving
    token checks and health probes meanwhile."""

    def __init__(
        self, *, memory_kib: int, time_cost: int, parallelism: int, concurrency: int = 4
    ) -> None:
        self.hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._limiter = anyio.CapacityLimiter(concurrency)

    @cached_property
    def _dummy_hash(self) -> str:
        return self.hasher.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(self.hasher.hash, password, limiter=self._limiter)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Check ``password``; with no hash (unknown user) spend the same time and fail."""
        target = password_hash or self._dummy_hash
        try:
            matched = await anyio.to_thread.run_sync(
                self.hasher.verify, target, password, limiter=self._limiter
            )
        except (VerificationError, InvalidHashError):
            return False
        return matched and bool(password_hash)

    def needs_rehash(self, password_hash: str) -> bool:
        return self.hasher.check_needs_rehash(password_hash)


def hash_token(token: str) -> str:
    """SHA-256 of a high-entropy secret (refresh tokens, API key secrets).

    These are random 256-bit values, so a fast hash is safe; a slow one would only make
    every authenticated request slower.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class KeyEncryption(SecretBox):
    """Encrypts signing keys with keys derived from ``IDENTITY_KEY_ENCRYPTION_KEY`` (one
    secret, or several comma-separated, newest first)."""

    def __init__(self, key_encryption_key: str) -> None:
        super().__init__(
            key_encryption_key,
            purpose="agentmesh-identity-kek",
            setting="IDENTITY_KEY_ENCRYPTION_KEY",
        )

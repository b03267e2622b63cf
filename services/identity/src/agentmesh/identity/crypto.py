"""Password hashing (Argon2id), secret hashing and encryption of keys at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cached_property

import anyio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agentmesh.shared.crypto import SecretBox, derive_key, split_secrets


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


class EmailHasher:
    """Keyed digests of erased emails: ``hmac-sha256:`` + HMAC-SHA256(key, SHA-256(email)).

    A bare SHA-256 of an email can be reversed by hashing candidate addresses; without
    the server key it cannot. Hashing the SHA-256 (not the address) lets rows written
    before this change, which hold a bare SHA-256, be upgraded in place (``upgrade``).
    The key is ``IDENTITY_EMAIL_HASH_KEY`` or, unset, one derived from the newest
    ``IDENTITY_KEY_ENCRYPTION_KEY`` (set it explicitly before rotating that key)."""

    PREFIX = "hmac-sha256:"

    def __init__(self, email_hash_key: str | None, key_encryption_key: str) -> None:
        if email_hash_key:
            self._key = email_hash_key.encode()
        else:
            newest = (split_secrets(key_encryption_key) or [""])[0]
            self._key = derive_key(newest, "agentmesh-identity-email-hash")

    def _keyed(self, sha256: bytes) -> str:
        return self.PREFIX + hmac.new(self._key, sha256, hashlib.sha256).hexdigest()

    def hash(self, email: str) -> str:
        """The keyed digest of ``email`` case-folded: the same for every spelling."""
        return self._keyed(hashlib.sha256(email.strip().casefold().encode()).digest())

    def upgrade(self, stored: str) -> str | None:
        """The keyed form of a legacy bare SHA-256 digest; None if ``stored`` is not one."""
        if stored.startswith(self.PREFIX) or len(stored) != 64:
            return None
        try:
            return self._keyed(bytes.fromhex(stored))
        except ValueError:
            return None

"""The signing keys' hand-written SQL."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

#: Serializes the replicas that create or rotate keys, until the transaction ends.
_LOCK_KEYS = text("SELECT pg_advisory_xact_lock(hashtext('identity.keys'))")


async def lock_keys(session: AsyncSession) -> None:
    """Hold the key store's advisory lock for the rest of ``session``'s transaction."""
    await session.execute(_LOCK_KEYS)

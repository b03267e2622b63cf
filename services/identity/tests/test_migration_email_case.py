"""identity 0004: existing emails are folded into a unique ``email_key``; accounts that
differ only in case stop the upgrade with a list of them, and nothing changes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic import command
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.shared.migrations import alembic_config
from agentmesh.shared.testing.servers import TestPostgres, recreate_database


@pytest.fixture(scope="module")
async def scratch_url(postgres_server: TestPostgres) -> str:
    await recreate_database(postgres_server.admin_url, "agentmesh_migrations_email_case")
    return postgres_server.database_url("agentmesh_migrations_email_case")


def run(url: str, verb: str, revision: str) -> None:
    getattr(command, verb)(alembic_config("identity", url), revision)


async def at_0003_with(url: str, emails: list[str]) -> list[uuid.UUID]:
    await asyncio.to_thread(run, url, "downgrade", "base")
    await asyncio.to_thread(run, url, "upgrade", "0003")
    ids = [uuid.uuid4() for _ in emails]
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            for user_id, email in zip(ids, emails, strict=True):
                await conn.execute(
                    text(
                        "INSERT INTO identity.users"
                        " (id, email, name, password_hash, roles, is_active)"
                        " VALUES (:id, :email, 'N', 'x', ARRAY['user'], true)"
                    ),
                    {"id": user_id, "email": email},
                )
    finally:
        await engine.dispose()
    return ids


async def test_emails_are_folded_into_a_unique_key(scratch_url):
    ada, bob = await at_0003_with(scratch_url, ["Ada@example.com", "bob@example.com"])
    await asyncio.to_thread(run, scratch_url, "upgrade", "head")
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text("SELECT id, email, email_key FROM identity.users ORDER BY email_key")
                )
            ).all()
            assert [tuple(r) for r in rows] == [
                (ada, "Ada@example.com", "ada@example.com"),
                (bob, "bob@example.com", "bob@example.com"),
            ]
        with pytest.raises(Exception, match="uq_users_email_key"):
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO identity.users"
                        " (id, email, email_key, name, roles, is_active)"
                        " VALUES (:id, 'ADA@example.com', 'ada@example.com', 'N',"
                        " ARRAY['user'], true)"
                    ),
                    {"id": uuid.uuid4()},
                )
    finally:
        await engine.dispose()


async def test_collisions_stop_the_upgrade_and_are_listed(scratch_url):
    first, second, _ = await at_0003_with(
        scratch_url, ["Eve@example.com", "eve@example.com", "solo@example.com"]
    )
    with pytest.raises(RuntimeError) as raised:
        await asyncio.to_thread(run, scratch_url, "upgrade", "head")
    message = str(raised.value)
    assert "1 email(s) belong to several accounts" in message
    assert f"Eve@example.com (id {first})" in message
    assert f"eve@example.com (id {second})" in message
    assert "solo@example.com" not in message
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            version = (
                await conn.execute(text("SELECT version_num FROM identity.alembic_version"))
            ).scalar_one()
            assert version == "0003"  # nothing half-done
            # Renaming one lets the upgrade through.
            await conn.execute(
                text("UPDATE identity.users SET email = 'eve2@example.com' WHERE id = :id"),
                {"id": second},
            )
            await conn.commit()
    finally:
        await engine.dispose()
    await asyncio.to_thread(run, scratch_url, "upgrade", "head")

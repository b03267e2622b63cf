"""Migration 0008: rows made at 0007 land in their owner's personal workspace.

As ``tests/test_migrations.py`` does for identity: a scratch database at the previous
head, rows written with SQL as that schema had them, then ``upgrade head``.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from alembic import command
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.shared.migrations import alembic_config
from agentmesh.shared.testing.servers import TestPostgres, recreate_database

TABLES = ("agents", "providers", "mcp_servers", "knowledge_bases", "documents")


@pytest.fixture(scope="module")
async def scratch_url(postgres_server: TestPostgres) -> str:
    await recreate_database(postgres_server.admin_url, "agentmesh_agents_0008")
    return postgres_server.database_url("agentmesh_agents_0008")


def run(url: str, verb: str, revision: str) -> None:
    getattr(command, verb)(alembic_config("agents", url), revision)


async def make_rows_at_0007(conn, owner: uuid.UUID) -> None:
    ids = {table: uuid.uuid4() for table in TABLES}
    statements = (
        "INSERT INTO agents.agents (id, owner_id, version, name) VALUES (:agents, :o, 1, 'A')",
        "INSERT INTO agents.agent_versions (agent_id, version, config)"
        " VALUES (:agents, 1, '{}'::jsonb)",
        "INSERT INTO agents.providers (id, owner_id, kind, name) VALUES (:providers, :o,"
        " 'openai', 'P')",
        "INSERT INTO agents.mcp_servers (id, owner_id, name, url) VALUES (:mcp_servers, :o,"
        " 'M', 'https://mcp.example/mcp')",
        "INSERT INTO agents.knowledge_bases (id, owner_id, name, embedding_model, dimension,"
        " chunk_size, chunk_overlap) VALUES (:knowledge_bases, :o, 'K', 'm', 384, 800, 100)",
        "INSERT INTO agents.documents (id, knowledge_base_id, owner_id, filename, content_type,"
        " content_hash, raw, size_bytes, status, chunk_count, metadata) VALUES (:documents,"
        " :knowledge_bases, :o, 'a.txt', 'text/plain', 'h', 'x', 1, 'pending', 0, '{}'::jsonb)",
    )
    for statement in statements:
        await conn.execute(text(statement), {**ids, "o": owner})


async def test_rows_made_at_0007_land_in_their_owners_personal_workspace(scratch_url):
    await asyncio.to_thread(run, scratch_url, "upgrade", "0007")
    ada, bob = uuid.uuid4(), uuid.uuid4()
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            for owner in (ada, bob):
                await make_rows_at_0007(conn, owner)
        await asyncio.to_thread(run, scratch_url, "upgrade", "head")
        async with engine.connect() as conn:
            for table in TABLES:
                rows = (
                    await conn.execute(
                        text(f"SELECT owner_id, workspace_id FROM agents.{table} ORDER BY 1")
                    )
                ).all()
                # A personal workspace's id is its owner's: the rows are theirs there.
                assert sorted(rows) == sorted([(ada, ada), (bob, bob)]), table
                nullable = (
                    await conn.execute(
                        text(
                            "SELECT is_nullable FROM information_schema.columns"
                            " WHERE table_schema = 'agents' AND table_name = :t"
                            " AND column_name = 'workspace_id'"
                        ),
                        {"t": table},
                    )
                ).scalar_one()
                assert nullable == "NO", table
            indexes = set(
                (
                    await conn.execute(
                        text("SELECT indexname FROM pg_indexes WHERE schemaname = 'agents'")
                    )
                ).scalars()
            )
            assert {f"ix_{t}_workspace_created" for t in TABLES[:4]} <= indexes
            assert "ix_documents_workspace_id" in indexes
        # And back: 0007's schema again, the rows kept.
        await asyncio.to_thread(run, scratch_url, "downgrade", "0007")
        async with engine.connect() as conn:
            count = (await conn.execute(text("SELECT count(*) FROM agents.agents"))).scalar_one()
            assert count == 2
    finally:
        await engine.dispose()

"""Models and migrations agree, and every migration goes down to base and back up.

Each service's Alembic tree is checked on a scratch database of its own: upgraded to head,
compared with the service's SQLAlchemy metadata (Alembic's autogenerate comparison, as
``alembic check`` runs it), then downgraded to base and upgraded again.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, pool, text
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.shared.migrations import MIGRATING_SERVICES, alembic_config
from agentmesh.shared.testing.servers import TestPostgres, recreate_database


def metadata_of(service: str) -> Any:
    return importlib.import_module(f"agentmesh.{service}.models").metadata


def differences(sync_conn: Any, service: str) -> list[Any]:
    metadata = metadata_of(service)
    context = MigrationContext.configure(
        sync_conn,
        opts={
            "target_metadata": metadata,
            "include_schemas": True,
            "include_name": lambda name, type_, _parent: (
                type_ != "schema" or name == metadata.schema
            ),
            "compare_type": True,
            "version_table_schema": metadata.schema,
        },
    )
    return compare_metadata(context, metadata)


def service_tables(sync_conn: Any, schema: str) -> set[str]:
    return set(inspect(sync_conn).get_table_names(schema=schema))


@pytest.fixture(scope="module")
async def scratch_url(postgres_server: TestPostgres) -> str:
    await recreate_database(postgres_server.admin_url, "agentmesh_migrations")
    return postgres_server.database_url("agentmesh_migrations")


def run(service: str, url: str, verb: str, revision: str) -> None:
    getattr(command, verb)(alembic_config(service, url), revision)


@pytest.mark.parametrize("service", MIGRATING_SERVICES)
async def test_models_match_migrations_at_head(service, scratch_url):
    await asyncio.to_thread(run, service, scratch_url, "upgrade", "head")
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(differences, service)
    finally:
        await engine.dispose()
    assert diff == [], f"{service}: models and migrations differ: {diff}"


@pytest.mark.parametrize("service", MIGRATING_SERVICES)
async def test_every_downgrade_runs_to_base_and_back(service, scratch_url):
    schema = metadata_of(service).schema
    await asyncio.to_thread(run, service, scratch_url, "upgrade", "head")
    await asyncio.to_thread(run, service, scratch_url, "downgrade", "base")
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            left = await conn.run_sync(service_tables, schema)
            assert left <= {"alembic_version"}, f"{service}: base still has {left}"
        await asyncio.to_thread(run, service, scratch_url, "upgrade", "head")
        async with engine.connect() as conn:
            version = (
                await conn.execute(text(f'SELECT version_num FROM "{schema}".alembic_version'))
            ).scalar_one()
            diff = await conn.run_sync(differences, service)
    finally:
        await engine.dispose()
    assert version == ScriptDirectory.from_config(alembic_config(service)).get_current_head()
    assert diff == []


ROOT = Path(__file__).resolve().parents[1]


def alembic_cli(service: str, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``uv run alembic <args>`` as a contributor runs it, from ``services/<service>``."""
    env = {**os.environ, "AGENTMESH_DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT / "services" / service,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("service", MIGRATING_SERVICES)
async def test_each_service_has_a_working_alembic_ini(service, scratch_url):
    await asyncio.to_thread(run, service, scratch_url, "upgrade", "head")
    head = ScriptDirectory.from_config(alembic_config(service)).get_current_head()
    checked = await asyncio.to_thread(alembic_cli, service, scratch_url, "check")
    assert checked.returncode == 0, checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
    down = await asyncio.to_thread(alembic_cli, service, scratch_url, "downgrade", "-1")
    assert down.returncode == 0, down.stderr
    current = await asyncio.to_thread(alembic_cli, service, scratch_url, "current")
    assert current.returncode == 0, current.stderr
    assert head not in current.stdout
    up = await asyncio.to_thread(alembic_cli, service, scratch_url, "upgrade", "head")
    assert up.returncode == 0, up.stderr
    current = await asyncio.to_thread(alembic_cli, service, scratch_url, "current")
    assert f"{head} (head)" in current.stdout


async def test_workspaces_migration_moves_existing_data_into_personal_workspaces(scratch_url):
    """identity 0003: data made at 0002 (users, sessions, API keys) lands in a personal
    workspace per user, owned by them."""
    await asyncio.to_thread(run, "identity", scratch_url, "downgrade", "base")
    await asyncio.to_thread(run, "identity", scratch_url, "upgrade", "0002")
    ada, bob = uuid.uuid4(), uuid.uuid4()
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            for user_id, email, name in (
                (ada, "ada@example.com", "Ada"),
                (bob, "bob@example.com", ""),
            ):
                await conn.execute(
                    text(
                        "INSERT INTO identity.users"
                        " (id, email, name, password_hash, roles, is_active)"
                        " VALUES (:id, :email, :name, 'x', ARRAY['user'], true)"
                    ),
                    {"id": user_id, "email": email, "name": name},
                )
            await conn.execute(
                text("INSERT INTO identity.refresh_token_families (id, user_id) VALUES (:id, :u)"),
                {"id": uuid.uuid4(), "u": ada},
            )
            await conn.execute(
                text(
                    "INSERT INTO identity.api_keys (id, key_id, user_id, name, scopes, secret_hash)"
                    " VALUES (:id, 'k1', :u, 'ci', ARRAY['chat'], 'h')"
                ),
                {"id": uuid.uuid4(), "u": ada},
            )
        await asyncio.to_thread(run, "identity", scratch_url, "upgrade", "head")
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT u.id, w.name, w.personal, m.role, u.last_workspace_id = w.id,"
                        " w.id = u.id"
                        " FROM identity.users u JOIN identity.memberships m ON m.user_id = u.id"
                        " JOIN identity.workspaces w ON w.id = m.workspace_id ORDER BY u.email"
                    )
                )
            ).all()
            # (A personal workspace has its owner's id.)
            assert [(r[0], r[2], r[3], r[4], r[5]) for r in rows] == [
                (ada, True, "owner", True, True),
                (bob, True, "owner", True, True),
            ]
            assert rows[0][1] == "Ada's workspace" and rows[1][1] == "bob@example.com's workspace"
            key_ws, family_ws = (
                await conn.execute(
                    text(
                        "SELECT (SELECT workspace_id FROM identity.api_keys WHERE key_id = 'k1'),"
                        " (SELECT workspace_id FROM identity.refresh_token_families"
                        "  WHERE user_id = :u)"
                    ),
                    {"u": ada},
                )
            ).one()
            ada_ws = (
                await conn.execute(
                    text("SELECT last_workspace_id FROM identity.users WHERE id = :u"), {"u": ada}
                )
            ).scalar_one()
            assert key_ws == family_ws == ada_ws
    finally:
        await engine.dispose()


async def test_chat_workspaces_migration_puts_existing_rows_in_personal_workspaces(scratch_url):
    """chat 0004: rows made at 0003 (agent snapshots, conversations with their runs,
    stateless runs, budgets and their spend) land in their owner's personal workspace,
    whose id is the owner's; a user's budget becomes their member budget there."""
    await asyncio.to_thread(run, "chat", scratch_url, "downgrade", "base")
    await asyncio.to_thread(run, "chat", scratch_url, "upgrade", "0003")
    ada, bob, agent, conversation = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    statements = [
        "INSERT INTO chat.agent_snapshots (agent_id, owner_id, version, config, deleted)"
        " VALUES (:agent, :bob, 1, '{}', false)",
        "INSERT INTO chat.conversations (id, user_id, agent_id, auto_title)"
        " VALUES (:conversation, :ada, :agent, true)",
        "INSERT INTO chat.messages (id, conversation_id, user_id, role, content, tool_calls,"
        " status) VALUES (gen_random_uuid(), :conversation, :ada, 'user', 'hi', '[]', 'completed')",
        "INSERT INTO chat.runs (id, user_id, conversation_id, agent_id, agent_version, status,"
        " model, provider, input_tokens, output_tokens, cost_usd, reserved_tokens,"
        " last_event_id) SELECT gen_random_uuid(), u, c, :agent, 1, 'completed', 'offline',"
        " 'offline', 3, 4, 0, 0, 0"
        " FROM (VALUES (CAST(:ada AS uuid), CAST(:conversation AS uuid)),"
        " (CAST(:bob AS uuid), NULL)) AS v(u, c)",
        "INSERT INTO chat.budgets (user_id, monthly_tokens) VALUES (:ada, 1000)",
        "INSERT INTO chat.budget_spend (user_id, month, tokens, cost_usd, reserved_tokens)"
        " VALUES (:ada, date_trunc('month', now())::date, 7, 0, 0)",
    ]
    params = {"ada": ada, "bob": bob, "agent": agent, "conversation": conversation}
    engine = create_async_engine(scratch_url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement), params)
        await asyncio.to_thread(run, "chat", scratch_url, "upgrade", "head")
        async with engine.connect() as conn:
            owned = {
                table: (
                    await conn.execute(text(f"SELECT {owner}, workspace_id FROM chat.{table}"))
                ).all()
                for table, owner in (
                    ("agent_snapshots", "owner_id"),
                    ("conversations", "user_id"),
                    ("runs", "user_id"),
                    ("budgets", "user_id"),
                    ("budget_spend", "user_id"),
                )
            }
            nullable = (
                await conn.execute(
                    text(
                        "SELECT table_name, is_nullable FROM information_schema.columns"
                        " WHERE table_schema = 'chat' AND column_name = 'workspace_id'"
                    )
                )
            ).all()
        assert sorted(owned["runs"]) == sorted([(ada, ada), (bob, bob)])
        assert owned["agent_snapshots"] == [(bob, bob)]
        for table in ("conversations", "budgets", "budget_spend"):
            assert owned[table] == [(ada, ada)], table
        # Every table with a workspace_id has it NOT NULL (later migrations' too: the
        # Responses API's tables).
        assert set(owned) <= set(dict(nullable))
        assert dict(nullable) == dict.fromkeys(dict(nullable), "NO")
    finally:
        await engine.dispose()

"""Alembic helpers: each service's tree lives in its own schema with its own version table.

A service's ``migrations/env.py`` is two lines::

    from agentmesh.identity.models import metadata
    run_migrations(metadata)
"""

from __future__ import annotations

import asyncio
import importlib
import os
import zlib
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATING_SERVICES = ("identity", "agents", "chat")


def migrations_dir(service: str) -> Path:
    """Where ``service``'s Alembic tree is: inside the package when installed from a wheel,
    else ``services/<service>/migrations`` in the source tree."""
    package = importlib.import_module(f"agentmesh.{service}")
    package_dir = Path(package.__file__ or "").resolve().parent
    for candidate in (package_dir / "migrations", package_dir.parents[2] / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError(f"no Alembic tree found for service {service!r}")


def alembic_config(service: str, database_url: str | None = None) -> Config:
    """An Alembic config for ``service`` (usable with ``alembic.command``)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir(service)))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(service: str, database_url: str, revision: str = "head") -> None:
    """Migrate ``service``'s schema to ``revision``. Synchronous; don't call inside a loop."""
    command.upgrade(alembic_config(service, database_url), revision)


def upgrade_with_connection(service: str, connection: Connection, revision: str = "head") -> None:
    """Migrate on an existing (sync-facing) connection, e.g. from ``conn.run_sync``."""
    config = alembic_config(service)
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _do_run(connection: Connection, metadata: MetaData) -> None:
    schema = metadata.schema
    assert schema, "a service's metadata must name its schema"
    # Serialize concurrent migrate jobs of the same service.
    connection.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": zlib.crc32(schema.encode())}
    )
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(metadata: MetaData) -> None:
    """Body of a service's ``env.py``: online migrations on asyncpg, in the service schema."""
    if context.is_offline_mode():
        context.configure(
            url=context.config.get_main_option("sqlalchemy.url"),
            target_metadata=metadata,
            version_table_schema=metadata.schema,
            literal_binds=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _do_run(connection, metadata)
        return
    url = context.config.get_main_option("sqlalchemy.url") or os.environ.get(
        "AGENTMESH_DATABASE_URL"
    )
    if not url:
        raise RuntimeError("set AGENTMESH_DATABASE_URL to migrate")

    async def _run() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(_do_run, metadata)
        finally:
            await engine.dispose()

    asyncio.run(_run())

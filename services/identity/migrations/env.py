"""Alembic environment of the identity service: its own schema and version table."""

from agentmesh.identity.models import metadata
from agentmesh.shared.migrations import run_migrations

run_migrations(metadata)

"""Alembic environment of the agents service: its own schema and version table."""

from agentmesh.agents.models import metadata
from agentmesh.shared.migrations import run_migrations

run_migrations(metadata)

"""Alembic environment of the chat service: its own schema and version table."""

from agentmesh.chat.models import metadata
from agentmesh.shared.migrations import run_migrations

run_migrations(metadata)

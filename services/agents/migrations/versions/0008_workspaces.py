"""workspaces: every resource belongs to a workspace

Agents, providers, MCP servers, knowledge bases and documents get ``workspace_id``. Rows
made before workspaces land in their owner's personal workspace, whose id is the owner's
user id (identity's 0003 made one per user with that id), so ``workspace_id = owner_id``.
``owner_id`` stays as "created by". Lists filter by workspace and order by creation: the
composite indexes serve them (the agents' owner index they replace served the old lists).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Tables whose lists go by workspace, newest or oldest first: (workspace_id, created_at).
LISTED = ("agents", "providers", "mcp_servers", "knowledge_bases")
TABLES = (*LISTED, "documents")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("workspace_id", sa.Uuid(), nullable=True), schema="agents")
        op.execute(f"UPDATE agents.{table} SET workspace_id = owner_id")
        op.alter_column(table, "workspace_id", nullable=False, schema="agents")
    for table in LISTED:
        op.create_index(
            f"ix_{table}_workspace_created", table, ["workspace_id", "created_at"], schema="agents"
        )
    op.create_index("ix_documents_workspace_id", "documents", ["workspace_id"], schema="agents")
    op.drop_index("ix_agents_owner_created", table_name="agents", schema="agents")


def downgrade() -> None:
    op.create_index(
        "ix_agents_owner_created", "agents", ["owner_id", "created_at"], schema="agents"
    )
    op.drop_index("ix_documents_workspace_id", table_name="documents", schema="agents")
    for table in LISTED:
        op.drop_index(f"ix_{table}_workspace_created", table_name=table, schema="agents")
    for table in TABLES:
        op.drop_column(table, "workspace_id", schema="agents")

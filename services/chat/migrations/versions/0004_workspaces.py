"""workspaces: every row belongs to one; budgets per member of a workspace or per workspace

Existing rows move into their owner's personal workspace, whose id is the owner's user
id: ``workspace_id = user_id`` (``owner_id`` for agent snapshots). A budget set before
workspaces was a user's: it becomes that user's member budget in their personal workspace.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, the column whose value is the personal workspace of existing rows)
OWNED = (
    ("agent_snapshots", "owner_id"),
    ("conversations", "user_id"),
    ("runs", "user_id"),
    ("budgets", "user_id"),
    ("budget_spend", "user_id"),
)


def upgrade() -> None:
    for table, owner in OWNED:
        op.add_column(table, sa.Column("workspace_id", sa.Uuid(), nullable=True), schema="chat")
        op.execute(f"UPDATE chat.{table} SET workspace_id = {owner}")
        op.alter_column(table, "workspace_id", nullable=False, schema="chat")
    op.create_index(
        op.f("ix_agent_snapshots_workspace_id"),
        "agent_snapshots",
        ["workspace_id"],
        unique=False,
        schema="chat",
    )
    op.create_index(
        "ix_conversations_workspace_user_created",
        "conversations",
        ["workspace_id", "user_id", "created_at", "id"],
        unique=False,
        schema="chat",
    )
    op.create_index(
        "ix_runs_workspace_created",
        "runs",
        ["workspace_id", "created_at"],
        unique=False,
        schema="chat",
    )
    op.drop_constraint("pk_budgets", "budgets", type_="primary", schema="chat")
    op.create_primary_key("pk_budgets", "budgets", ["workspace_id", "user_id"], schema="chat")
    op.drop_constraint("pk_budget_spend", "budget_spend", type_="primary", schema="chat")
    op.create_primary_key(
        "pk_budget_spend", "budget_spend", ["workspace_id", "user_id", "month"], schema="chat"
    )


def downgrade() -> None:
    # Only budgets of a member in their personal workspace existed before: the others
    # (shared workspaces, whole workspaces) can't be kept.
    op.execute("DELETE FROM chat.budgets WHERE workspace_id <> user_id")
    op.execute("DELETE FROM chat.budget_spend WHERE workspace_id <> user_id")
    op.drop_constraint("pk_budget_spend", "budget_spend", type_="primary", schema="chat")
    op.create_primary_key("pk_budget_spend", "budget_spend", ["user_id", "month"], schema="chat")
    op.drop_constraint("pk_budgets", "budgets", type_="primary", schema="chat")
    op.create_primary_key("pk_budgets", "budgets", ["user_id"], schema="chat")
    op.drop_index("ix_runs_workspace_created", table_name="runs", schema="chat")
    op.drop_index(
        "ix_conversations_workspace_user_created", table_name="conversations", schema="chat"
    )
    op.drop_index(
        op.f("ix_agent_snapshots_workspace_id"), table_name="agent_snapshots", schema="chat"
    )
    for table, _ in reversed(OWNED):
        op.drop_column(table, "workspace_id", schema="chat")

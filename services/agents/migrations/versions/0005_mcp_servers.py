"""mcp servers

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("auth_header_name", sa.Text(), nullable=True),
        sa.Column("auth_header_value_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("auth_header_value_last4", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
        schema="agents",
    )
    op.create_index(
        op.f("ix_mcp_servers_owner_id"), "mcp_servers", ["owner_id"], unique=False, schema="agents"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_mcp_servers_owner_id"), table_name="mcp_servers", schema="agents")
    op.drop_table("mcp_servers", schema="agents")

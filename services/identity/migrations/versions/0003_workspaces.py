"""workspaces: workspaces, memberships, invitations; every account gets a personal one

Data migration: each existing user gets a personal workspace (owner), their sessions and
API keys are bound to it.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "identity"  # the schema; SQL below is built from this constant only


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("personal", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
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
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            [f"{S}.users.id"],
            name=op.f("fk_workspaces_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
        schema=S,
    )
    op.create_table(
        "memberships",
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("personal", sa.Boolean(), nullable=False),
        sa.Column(
            "joined_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{S}.users.id"],
            name=op.f("fk_memberships_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            [f"{S}.workspaces.id"],
            name=op.f("fk_memberships_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "user_id", name=op.f("pk_memberships")),
        schema=S,
    )
    op.create_index("ix_memberships_user_id", "memberships", ["user_id"], schema=S)
    op.create_index(
        "uq_memberships_one_personal",
        "memberships",
        ["user_id"],
        unique=True,
        schema=S,
        postgresql_where=sa.text("personal"),
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.Text(), nullable=False),
        sa.Column("invited_by", sa.Uuid(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["invited_by"],
            [f"{S}.users.id"],
            name=op.f("fk_invitations_invited_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            [f"{S}.workspaces.id"],
            name=op.f("fk_invitations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_invitations_token_hash")),
        schema=S,
    )
    op.create_index("ix_invitations_email", "invitations", ["email"], schema=S)
    op.create_index("ix_invitations_workspace_id", "invitations", ["workspace_id"], schema=S)
    op.add_column("users", sa.Column("last_workspace_id", sa.Uuid(), nullable=True), schema=S)
    op.add_column(
        "refresh_token_families", sa.Column("workspace_id", sa.Uuid(), nullable=True), schema=S
    )
    op.add_column("api_keys", sa.Column("workspace_id", sa.Uuid(), nullable=True), schema=S)

    # Every existing account gets its personal workspace; its sessions and keys move there.
    # A personal workspace has its owner's id, so agents and chat move their rows into it
    # (their own migrations) without reading identity's schema.
    op.execute(
        f"""
        WITH made AS (
            INSERT INTO {S}.workspaces (id, name, personal, created_by, created_at)
            SELECT u.id, coalesce(nullif(u.name, ''), u.email) || '''s workspace',
                   true, u.id, u.created_at
            FROM {S}.users u
            RETURNING id, created_by
        )
        INSERT INTO {S}.memberships (workspace_id, user_id, role, personal, joined_at)
        SELECT made.id, made.created_by, 'owner', true, now() FROM made
        """
    )
    op.execute(
        f"""
        UPDATE {S}.users u SET last_workspace_id = m.workspace_id
        FROM {S}.memberships m WHERE m.user_id = u.id AND m.personal
        """
    )
    op.execute(
        f"""
        UPDATE {S}.refresh_token_families f SET workspace_id = m.workspace_id
        FROM {S}.memberships m WHERE m.user_id = f.user_id AND m.personal
        """
    )
    op.execute(
        f"""
        UPDATE {S}.api_keys k SET workspace_id = m.workspace_id
        FROM {S}.memberships m WHERE m.user_id = k.user_id AND m.personal
        """
    )
    op.alter_column("api_keys", "workspace_id", nullable=False, schema=S)
    op.create_index(op.f("ix_api_keys_workspace_id"), "api_keys", ["workspace_id"], schema=S)
    op.create_foreign_key(
        op.f("fk_api_keys_workspace_id_workspaces"),
        "api_keys",
        "workspaces",
        ["workspace_id"],
        ["id"],
        source_schema=S,
        referent_schema=S,
        ondelete="CASCADE",
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_api_keys_workspace_id_workspaces"), "api_keys", schema=S, type_="foreignkey"
    )
    op.drop_index(op.f("ix_api_keys_workspace_id"), table_name="api_keys", schema=S)
    op.drop_column("api_keys", "workspace_id", schema=S)
    op.drop_column("refresh_token_families", "workspace_id", schema=S)
    op.drop_column("users", "last_workspace_id", schema=S)
    op.drop_index("ix_invitations_workspace_id", table_name="invitations", schema=S)
    op.drop_index("ix_invitations_email", table_name="invitations", schema=S)
    op.drop_table("invitations", schema=S)
    op.drop_index("uq_memberships_one_personal", table_name="memberships", schema=S)
    op.drop_index("ix_memberships_user_id", table_name="memberships", schema=S)
    op.drop_table("memberships", schema=S)
    op.drop_table("workspaces", schema=S)

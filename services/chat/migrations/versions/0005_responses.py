"""responses: the OpenAI Responses and Conversations APIs' records

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = postgresql.JSONB(astext_type=sa.Text())


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("previous_response_id", sa.Uuid(), nullable=True),
        sa.Column("conversation_id", sa.Uuid(), nullable=True),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("input_items", JSON, nullable=False),
        sa.Column("output", JSON, nullable=False),
        sa.Column("usage", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("incomplete_details", JSON, nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["chat.conversations.id"],
            ondelete="SET NULL",
            name=op.f("fk_responses_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
        schema="chat",
    )
    op.create_index(
        "ix_responses_workspace_created", "responses", ["workspace_id", "created_at"], schema="chat"
    )
    op.create_index(op.f("ix_responses_user_id"), "responses", ["user_id"], schema="chat")
    op.create_index(
        op.f("ix_responses_conversation_id"), "responses", ["conversation_id"], schema="chat"
    )
    op.create_table(
        "conversation_meta",
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["chat.conversations.id"],
            ondelete="CASCADE",
            name=op.f("fk_conversation_meta_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_conversation_meta")),
        schema="chat",
    )
    op.create_index(
        op.f("ix_conversation_meta_workspace_id"),
        "conversation_meta",
        ["workspace_id"],
        schema="chat",
    )

    op.create_table(
        "conversation_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("conversation_id", sa.Uuid(), nullable=False),
        sa.Column("workspace_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("item", JSON, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["chat.conversations.id"],
            ondelete="CASCADE",
            name=op.f("fk_conversation_items_conversation_id_conversations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_items")),
        schema="chat",
    )
    op.create_index(
        "ix_conversation_items_conversation_id_id",
        "conversation_items",
        ["conversation_id", "id"],
        schema="chat",
    )


def downgrade() -> None:
    op.drop_table("conversation_items", schema="chat")
    op.drop_table("conversation_meta", schema="chat")
    op.drop_table("responses", schema="chat")

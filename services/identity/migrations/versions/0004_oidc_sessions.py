"""oidc: linked identities, sign-in flows and login codes; emails compared case-folded;
sessions remember how and from where they signed in

Data migration: every user's ``email_key`` is their email case-folded (Python's
``str.casefold``, as the service computes it). Accounts whose emails differ only in case
cannot both keep a unique key: the upgrade stops with an error that lists them (ids and
emails), and changes nothing; merge or rename them, then upgrade again.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "identity"  # the schema; SQL below is built from this constant only


class EmailCollision(RuntimeError):
    """Accounts whose emails are the same but for case."""


def fold_existing_emails() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(f"SELECT id, email FROM {S}.users ORDER BY created_at, id"))
    keys: dict[str, list[tuple[str, str]]] = {}
    for user_id, email in rows:
        keys.setdefault(email.casefold(), []).append((str(user_id), email))
    collisions = {key: users for key, users in keys.items() if len(users) > 1}
    if collisions:
        lines = [
            f"  {key}: " + ", ".join(f"{email} (id {user_id})" for user_id, email in users)
            for key, users in sorted(collisions.items())
        ]
        raise EmailCollision(
            f"{len(collisions)} email(s) belong to several accounts once case is ignored; "
            "merge or rename them (e.g. UPDATE identity.users SET email = ...), then run "
            "the upgrade again:\n" + "\n".join(lines)
        )
    for key, [(user_id, _email)] in keys.items():
        bind.execute(
            sa.text(f"UPDATE {S}.users SET email_key = :key WHERE id = :id"),
            {"key": key, "id": user_id},
        )


def upgrade() -> None:
    op.add_column("users", sa.Column("email_key", sa.Text(), nullable=True), schema=S)
    fold_existing_emails()
    op.alter_column("users", "email_key", nullable=False, schema=S)
    op.create_unique_constraint(op.f("uq_users_email_key"), "users", ["email_key"], schema=S)
    op.drop_constraint(op.f("uq_users_email"), "users", schema=S, type_="unique")
    op.alter_column("users", "password_hash", nullable=True, schema=S)

    op.add_column(
        "refresh_token_families",
        sa.Column("method", sa.Text(), server_default="password", nullable=False),
        schema=S,
    )
    op.add_column("refresh_token_families", sa.Column("user_agent", sa.Text()), schema=S)
    op.add_column("refresh_token_families", sa.Column("ip", sa.Text()), schema=S)
    op.add_column(
        "refresh_token_families",
        sa.Column(
            "last_used_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        schema=S,
    )
    op.execute(f"UPDATE {S}.refresh_token_families SET last_used_at = created_at")

    op.create_table(
        "oidc_identities",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column(
            "linked_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{S}.users.id"],
            name=op.f("fk_oidc_identities_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oidc_identities")),
        sa.UniqueConstraint(
            "provider", "subject", name=op.f("uq_oidc_identities_provider_subject")
        ),
        sa.UniqueConstraint(
            "user_id", "provider", name=op.f("uq_oidc_identities_user_id_provider")
        ),
        schema=S,
    )
    op.create_index(op.f("ix_oidc_identities_user_id"), "oidc_identities", ["user_id"], schema=S)
    op.create_table(
        "oidc_flows",
        sa.Column("state_hash", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("return_to", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("code_hash", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_oidc_flows")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_oidc_flows_code_hash")),
        schema=S,
    )
    op.create_index(op.f("ix_oidc_flows_expires_at"), "oidc_flows", ["expires_at"], schema=S)
    op.create_table(
        "oidc_login_codes",
        sa.Column("code_hash", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ip", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            [f"{S}.users.id"],
            name=op.f("fk_oidc_login_codes_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code_hash", name=op.f("pk_oidc_login_codes")),
        schema=S,
    )
    op.create_index(
        op.f("ix_oidc_login_codes_expires_at"), "oidc_login_codes", ["expires_at"], schema=S
    )


def downgrade() -> None:
    op.drop_table("oidc_login_codes", schema=S)
    op.drop_table("oidc_flows", schema=S)
    op.drop_table("oidc_identities", schema=S)
    for column in ("last_used_at", "ip", "user_agent", "method"):
        op.drop_column("refresh_token_families", column, schema=S)
    # Accounts made by OpenID Connect have no password: one that never verifies.
    op.execute(f"UPDATE {S}.users SET password_hash = '' WHERE password_hash IS NULL")
    op.alter_column("users", "password_hash", nullable=False, schema=S)
    op.create_unique_constraint(op.f("uq_users_email"), "users", ["email"], schema=S)
    op.drop_constraint(op.f("uq_users_email_key"), "users", schema=S, type_="unique")
    op.drop_column("users", "email_key", schema=S)

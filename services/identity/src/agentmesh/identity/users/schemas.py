from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentmesh.shared.fields import NotNull

Role = Literal["user", "admin"]


def normalize_email(value: str) -> str:
    """Trim, check the syntax, and lower-case the domain (the local part is kept)."""
    value = value.strip()
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from exc
    local, _, domain = checked.normalized.rpartition("@")
    return f"{local}@{domain.lower()}"


def email_key(email: str) -> str:
    """What emails are compared and indexed by: the normalized email, case-folded, so
    ``Ada@Example.com`` and ``ada@example.com`` are one account. Falls back to the trimmed
    text for input that is not an email (a login attempt with garbage finds nobody)."""
    try:
        return normalize_email(email).casefold()
    except ValueError:
        return email.strip().casefold()


class EmailField(BaseModel):
    email: str = Field(max_length=320, examples=["ada@example.com"])

    @field_validator("email")
    @classmethod
    def _normalize(cls, value: str) -> str:
        return normalize_email(value)


PasswordStr = Field(min_length=12, max_length=256, description="12 to 256 characters")


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str
    role: Role
    roles: list[str]
    active: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, user: Any) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            role="admin" if user.is_admin else "user",
            roles=list(user.roles),
            active=user.is_active,
            created_at=user.created_at,
            updated_at=user.updated_at,
        )


class LinkedIdentity(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    provider: str
    email: str | None
    linked_at: datetime


class MeOut(UserOut):
    identities: list[LinkedIdentity] = Field(
        default_factory=list, description="OpenID Connect accounts you can sign in with"
    )
    has_password: bool = Field(default=True, description="Whether you can sign in with a password")


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


class ProfileUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = NotNull(min_length=1, max_length=200)
    password: str = NotNull(min_length=12, max_length=256)
    current_password: str = NotNull(max_length=256)


class AdminUserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role = NotNull()
    active: bool = NotNull()


class ErasureOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    status: Literal["pending", "completed"]
    requested_at: datetime
    agents_completed_at: datetime | None
    chat_completed_at: datetime | None
    completed_at: datetime | None

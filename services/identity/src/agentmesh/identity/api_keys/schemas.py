from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from agentmesh.shared.access import SCOPES
from agentmesh.shared.pagination import Page

Scope = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$")]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(default_factory=list, max_length=32)
    expires_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SCOPES))
        if unknown:
            raise ValueError(
                f"unknown scope(s): {', '.join(unknown)}; see GET /api/v1/api-keys/scopes"
            )
        return value

    @field_validator("expires_at")
    @classmethod
    def _future(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value <= datetime.now(UTC):
            raise ValueError("expires_at must be in the future")
        return value


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    workspace_id: uuid.UUID
    name: str
    prefix: str = Field(description="The public start of the key, am_<key_id>_")
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None


class ApiKeyPage(Page[ApiKeyOut]):
    pass


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The whole key. Shown once; only its hash is stored.")


class ExchangeRequest(BaseModel):
    key: str = Field(min_length=1, max_length=256)


class ExchangeResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int
    api_key_id: str
    user_id: uuid.UUID
    scopes: list[str]


class ScopeOut(BaseModel):
    scope: str
    allows: str

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from agentmesh.identity.users.schemas import EmailField, PasswordStr


class RegisterRequest(EmailField):
    password: str = PasswordStr
    name: str = Field(min_length=1, max_length=200)


class LoginRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=256)


class RefreshRequest(BaseModel):
    refresh_token: str = Field(min_length=1, max_length=512)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - OAuth2 token type
    expires_in: int = Field(description="Seconds until the access token expires")

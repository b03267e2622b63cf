from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, SecretStr, model_validator

from agentmesh.shared.fields import NotNull
from agentmesh.shared.pagination import Page

Kind = Literal["openai", "anthropic", "ollama", "azure_openai", "mistral"]
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
    "mistral": "https://api.mistral.ai/v1",
}
#: Kinds that cannot be called without a key.
NEEDS_KEY = ("anthropic", "azure_openai", "mistral")
ApiVersion = Field(
    default=None,
    pattern=r"^[A-Za-z0-9._-]{1,40}$",
    description="azure_openai: the API version (api-version), e.g. 2024-10-21",
)


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind
    name: str = Field(min_length=1, max_length=200)
    base_url: AnyHttpUrl | None = Field(
        default=None, description="OpenAI-compatible servers (vLLM, LM Studio, ...) and Ollama"
    )
    api_key: SecretStr | None = Field(default=None, max_length=1000)
    api_version: str | None = ApiVersion

    @model_validator(mode="after")
    def _needs_key(self) -> ProviderCreate:
        if self.kind in NEEDS_KEY and not self.api_key:
            raise ValueError(f"an {self.kind} provider needs an api_key")
        if self.kind == "azure_openai" and not (self.base_url and self.api_version):
            raise ValueError(
                "an azure_openai provider needs the resource's base_url and an api_version"
            )
        if self.api_version is not None and self.kind != "azure_openai":
            raise ValueError("api_version is for azure_openai providers only")
        return self


class ProviderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = NotNull(min_length=1, max_length=200)
    base_url: AnyHttpUrl | None = None
    api_key: SecretStr | None = Field(default=None, max_length=1000)
    api_version: str = NotNull(pattern=r"^[A-Za-z0-9._-]{1,40}$")


class ProviderOut(BaseModel):
    id: str = Field(description="A UUID, or 'offline' for the built-in provider")
    kind: Literal["openai", "anthropic", "ollama", "azure_openai", "mistral", "offline"]
    name: str
    base_url: str | None
    api_version: str | None = None
    api_key_last4: str | None = Field(
        description="Only the last 4 characters are ever shown, and only to the workspace's "
        "admins and owners (null for members and viewers)"
    )
    workspace_id: uuid.UUID | None = Field(default=None, description="None for the built-in one")
    builtin: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ProviderPage(Page[ProviderOut]):
    pass


class ProviderTestResult(BaseModel):
    ok: bool
    status: int | None = Field(default=None, description="The provider's HTTP status")
    latency_ms: float | None = None
    models: list[str] = Field(default_factory=list, description="Models the provider lists")
    error_type: str | None = Field(
        default=None,
        description="The provider's own error type (e.g. invalid_api_key), or ours: "
        "address-not-allowed, timeout, ConnectError, unexpected-answer",
    )
    error: str | None = Field(
        default=None, description="What went wrong, from the status: never the answer's body"
    )

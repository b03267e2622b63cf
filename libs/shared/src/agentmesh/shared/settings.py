"""Settings base: shared ``AGENTMESH_*`` settings plus a per-service prefix.

A service declares one class::

    class IdentitySettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="IDENTITY_")
        signing_key_encryption_key: SecretStr

and reads the shared settings (database, NATS, telemetry) from ``settings.common``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Values that look like someone forgot to set a secret.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "password",
        "placeholder",
        "example",
        "dev",
        "development",
        "test",
        "xxx",
        "todo",
    }
)


def is_placeholder(value: str) -> bool:
    """True when ``value`` is empty, a well-known placeholder, or marked ``change-me``."""
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_SECRETS or ("change" in lowered and "me" in lowered)


class CommonSettings(BaseSettings):
    """Settings every service shares, read from ``AGENTMESH_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_", extra="ignore")

    env: Literal["development", "test", "production"] = "production"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/agentmesh"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    #: Postgres cancels any statement of a service's engine running longer than this
    #: (milliseconds, 0 = no limit). Migrations have engines of their own, without it.
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    #: Postgres ends a session left idle inside a transaction this long (milliseconds,
    #: 0 = never), so a forgotten transaction gives its connection and locks back.
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)
    nats_url: str = "nats://127.0.0.1:4222"
    log_level: str = "INFO"
    log_json: bool = True
    #: How long sent outbox rows and processed inbox rows are kept (seconds).
    outbox_retention_seconds: int = Field(default=7 * 24 * 3600, ge=60)
    #: Safety-net sweep interval of the outbox relay (LISTEN/NOTIFY wakes it normally).
    outbox_sweep_seconds: float = Field(default=5.0, gt=0)
    #: Deliveries before a failing event goes to ``dlq.<service>.<subject>``.
    consumer_max_deliver: int = Field(default=5, ge=1, le=1000)
    #: First redelivery delay; doubles on each attempt, capped by ``consumer_backoff_max``.
    consumer_backoff_seconds: float = Field(default=0.5, gt=0)
    consumer_backoff_max_seconds: float = Field(default=30.0, gt=0)
    #: Start-up waits this long for NATS, then serves anyway (readiness says NATS is down;
    #: writes still commit, their events wait in the outbox) while connecting goes on.
    nats_connect_wait_seconds: float = Field(default=10.0, ge=0)
    #: JetStream stream replicas (3 in a clustered production NATS).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    #: Most bytes the ``CHAT_RUNS`` stream (run events, kept for resuming) holds; the
    #: oldest events go first when it is full.
    runs_stream_max_bytes: int = Field(default=1024**3, ge=1024**2)
    #: Auth: where the verifier fetches identity's public keys, and what it expects.
    jwks_url: str = "http://127.0.0.1:8081/.well-known/jwks.json"
    jwt_issuer: str = "agentmesh-identity"
    jwt_audience: str = "agentmesh"

    @property
    def is_development(self) -> bool:
        return self.env == "development"


class ServiceSettings(BaseSettings):
    """Base for a service's settings class; subclasses set ``env_prefix``.

    Every ``SecretStr`` field refuses placeholder values unless
    ``AGENTMESH_ENV=development``.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "agentmesh"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    common: CommonSettings = Field(default_factory=CommonSettings)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.common.is_development:
            return self
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value()):
                alias = field.validation_alias
                choices = getattr(alias, "choices", None)
                if choices:
                    variable = str(choices[0])
                elif isinstance(alias, str):
                    variable = alias
                else:
                    variable = f"{self.model_config.get('env_prefix', '')}{name.upper()}"
                raise ValueError(
                    f"{variable} is unset or a placeholder; set a real secret "
                    "(placeholders are only accepted with AGENTMESH_ENV=development)"
                )
        return self

"""Settings base: shared ``AGENTMESH_*`` settings plus a per-service prefix.

A service declares one class::

    class IdentitySettings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="IDENTITY_")
        signing_key_encryption_key: SecretStr

and reads the shared settings (database, NATS, telemetry) from ``settings.common``.
"""

from __future__ import annotations

import math
import string
from typing import Literal, Self

from pydantic import Field, SecretStr, ValidationError, model_validator
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


#: Outside development every secret (each key of a comma-separated list) needs this much.
MIN_SECRET_ENTROPY_BYTES = 32


def is_placeholder(value: str) -> bool:
    """True when ``value`` is empty, a well-known placeholder, or marked ``change-me``."""
    lowered = value.strip().lower()
    return lowered in PLACEHOLDER_SECRETS or ("change" in lowered and "me" in lowered)


def entropy_bytes(value: str) -> float:
    """An upper estimate of the entropy of a random-looking secret, in bytes.

    Length times log2 of the alphabet its characters come from: hex digits (16), or the
    sum of the classes present (lower and upper letters 26 each, digits 10, other
    printable ASCII 33), 8 bits for any other character. ``openssl rand -base64 32``,
    ``openssl rand -hex 32`` and ``secrets.token_urlsafe(32)`` all pass; a 32-character
    hex string (16 bytes) or a short password does not. A secret with fewer than 8
    distinct characters counts as none (``aaaa…``)."""
    if len(set(value)) < 8:
        return 0.0
    if all(c in string.hexdigits for c in value) and (
        value.lower() == value or value.upper() == value
    ):
        return len(value) * 4 / 8
    ascii_chars = [c for c in value if c.isascii() and c.isprintable()]
    alphabet = sum(
        size
        for chars, size in (
            (string.ascii_lowercase, 26),
            (string.ascii_uppercase, 26),
            (string.digits, 10),
            (string.punctuation + " ", 33),
        )
        if any(c in chars for c in ascii_chars)
    )
    bits = len(ascii_chars) * math.log2(max(alphabet, 2)) + 8 * (len(value) - len(ascii_chars))
    return bits / 8


class CommonSettings(BaseSettings):
    """Settings every service shares, read from ``AGENTMESH_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_", extra="ignore")

    env: Literal["development", "test", "production"] = "production"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/agentmesh"
    #: Connections kept open per process. Overflow connections are closed as soon as they
    #: are given back: with 10 + 10 each request beyond the tenth opened a connection
    #: (TLS attempt, codecs) and the read path spent most of its time there (bench.read_path).
    db_pool_size: int = Field(default=20, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_timeout: float = Field(default=10.0, gt=0)
    db_pool_recycle: int = Field(default=1800, ge=-1)
    #: A pooled connection idle this long (seconds) is pinged before it is handed out and
    #: replaced if dead; one in steady use is not (a round trip per request otherwise). A
    #: connection that died while busy fails its statement, which invalidates the pool.
    db_ping_idle_seconds: float = Field(default=10.0, ge=0)
    #: Postgres cancels any statement of a service's engine running longer than this
    #: (milliseconds, 0 = no limit). Migrations have engines of their own, without it.
    db_statement_timeout_ms: int = Field(default=30_000, ge=0)
    #: Postgres ends a session left idle inside a transaction this long (milliseconds,
    #: 0 = never), so a forgotten transaction gives its connection and locks back.
    db_idle_in_transaction_timeout_ms: int = Field(default=60_000, ge=0)
    nats_url: str = "nats://127.0.0.1:4222"
    log_level: str = "INFO"
    #: Serve Prometheus metrics on a port of their own instead of ``GET /metrics`` on the
    #: service's port (0: on the service's port; the gateway then serves none publicly).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: How often the gauges read from the database or NATS (outbox backlog, consumer lag,
    #: ingest queue) are refreshed, in seconds.
    metrics_refresh_seconds: float = Field(default=15.0, gt=0)
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

    Unless ``AGENTMESH_ENV=development``, every ``SecretStr`` field refuses placeholder
    values and (passwords aside, which have their own policy) secrets with less than
    ``MIN_SECRET_ENTROPY_BYTES`` of entropy; a comma-separated list of keys is checked
    key by key. ``load()`` turns a refusal into a one-line exit.
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
            if not isinstance(value, SecretStr):
                continue
            alias = field.validation_alias
            choices = getattr(alias, "choices", None)
            if choices:
                variable = str(choices[0])
            elif isinstance(alias, str):
                variable = alias
            else:
                variable = f"{self.model_config.get('env_prefix', '')}{name.upper()}"
            secret = value.get_secret_value()
            if is_placeholder(secret):
                raise ValueError(
                    f"{variable} is unset or a placeholder; set a real secret "
                    "(placeholders are only accepted with AGENTMESH_ENV=development)"
                )
            if "password" in name:
                continue
            for part in [p.strip() for p in secret.split(",") if p.strip()] or [secret]:
                estimate = entropy_bytes(part)
                if estimate < MIN_SECRET_ENTROPY_BYTES:
                    raise ValueError(
                        f"{variable} is too weak: about {estimate:.0f} bytes of entropy, "
                        f"{MIN_SECRET_ENTROPY_BYTES} needed (e.g. `openssl rand -base64 32`; "
                        "weak secrets are only accepted with AGENTMESH_ENV=development)"
                    )
        return self

    @classmethod
    def load(cls) -> Self:
        """The settings from the environment; an invalid one exits with a one-line reason."""
        try:
            return cls()
        except ValidationError as exc:
            error = exc.errors()[0]
            message = str(error["msg"]).removeprefix("Value error, ")
            if error.get("loc"):  # a field's own check (model checks name their variable)
                message = f"{'.'.join(map(str, error['loc']))}: {message}"
            raise SystemExit(f"agentmesh: {message}") from None

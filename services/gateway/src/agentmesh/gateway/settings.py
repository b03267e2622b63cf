"""Settings of the gateway: ``GATEWAY_*`` plus the shared ``AGENTMESH_*``."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from agentmesh.shared.settings import ServiceSettings


class RateLimit(BaseModel):
    """A token bucket: ``rate`` requests per second on average, bursts up to ``burst``."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class RouteGroupPolicy(BaseModel):
    """Timeouts and limits of one route group."""

    connect_timeout: float = Field(default=1.0, gt=0)
    read_timeout: float = Field(default=30.0, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=0)
    rate_limit: RateLimit = RateLimit(rate=20, burst=40)


def _default_groups() -> dict[str, RouteGroupPolicy]:
    return {
        # Unauthenticated auth routes are limited per IP; keep them tight.
        "auth": RouteGroupPolicy(
            read_timeout=15, max_body_bytes=16 * 1024, rate_limit=RateLimit(rate=2, burst=10)
        ),
        "identity": RouteGroupPolicy(read_timeout=15),
        "agents": RouteGroupPolicy(read_timeout=30),
        "knowledge": RouteGroupPolicy(read_timeout=120, max_body_bytes=25 * 1024 * 1024),
        "chat": RouteGroupPolicy(read_timeout=30),
        # Runs stream for minutes and cost money: long read timeout, stricter limit.
        "chat_runs": RouteGroupPolicy(
            read_timeout=600, max_body_bytes=512 * 1024, rate_limit=RateLimit(rate=1, burst=5)
        ),
    }


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", extra="ignore", env_nested_delimiter="__"
    )

    service_name: str = "gateway"
    port: int = Field(default=8080, ge=0, le=65535)
    identity_url: str = "http://127.0.0.1:8081"
    agents_url: str = "http://127.0.0.1:8082"
    chat_url: str = "http://127.0.0.1:8083"
    #: Presented to identity's /internal/api-keys/exchange.
    internal_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("AGENTMESH_INTERNAL_TOKEN", "GATEWAY_INTERNAL_TOKEN"),
    )
    #: Per route group: timeouts, body limit, rate limit (GATEWAY_GROUPS__CHAT_RUNS__...).
    groups: dict[str, RouteGroupPolicy] = Field(default_factory=_default_groups)
    #: An exchanged API-key token is dropped this many seconds before it expires.
    api_key_cache_margin_seconds: float = Field(default=30, ge=0)
    api_key_cache_size: int = Field(default=10_000, ge=1)
    #: Failed authentications allowed per IP (a bucket, then 429).
    auth_failure_limit: RateLimit = RateLimit(rate=1, burst=20)
    #: A refused API key is remembered this long, so repeats cost identity nothing.
    api_key_negative_cache_seconds: float = Field(default=5.0, ge=0)
    #: Rate limits, the failed-authentication limit and refused API keys are shared by
    #: every replica with the same scope through JetStream KV (docs/scaling.md); off:
    #: each replica keeps its own.
    shared_limits: bool = True
    limits_scope: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: Tokens a replica leases from a shared bucket at once (at most a quarter of the
    #: burst): fewer round trips to NATS, at the cost of one batch of tolerance.
    limits_batch: int = Field(default=4, ge=1, le=1000)
    #: A store operation slower than this counts as unreachable: per-replica limits
    #: for ``limits_retry_seconds``, then the store is tried again.
    limits_timeout_seconds: float = Field(default=0.5, gt=0)
    limits_retry_seconds: float = Field(default=1.0, gt=0)
    #: Admissions of this long join one write to the store (unless a batch is pending).
    limits_sync_seconds: float = Field(default=0.01, ge=0, le=1)
    #: Consecutive outages of an upstream's route group (refused or reset connections,
    #: timeouts, 503s the upstream marks as its own) that open its circuit, and how long.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_open_seconds: float = Field(default=10.0, gt=0)
    #: CORS: exact origins (a wildcard is refused together with credentials).
    cors_origins: list[str] = Field(default_factory=list)
    cors_allow_credentials: bool = False
    #: Honour X-Forwarded-Proto/-For from these peers (a load balancer in front):
    #: addresses or CIDR ranges (``10.0.0.0/8``, ``fd00::/8``).
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Max-age of HSTS, sent only when the request arrived over TLS.
    hsts_seconds: int = Field(default=31_536_000, ge=0)
    upstream_health_timeout: float = Field(default=2.0, gt=0)
    #: How long the merged OpenAPI/AsyncAPI documents are cached.
    docs_cache_seconds: float = Field(default=30.0, ge=0)
    #: Tokens of deactivated users are refused until they would have expired.
    access_token_ttl_seconds: int = Field(default=900, ge=30)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        from agentmesh.gateway.addresses import parse_network

        for entry in value:
            try:
                parse_network(entry)
            except ValueError:
                raise ValueError(f"not an IP address or CIDR range: {entry!r}") from None
        return value

    @field_validator("groups", mode="before")
    @classmethod
    def _merge_groups(cls, value: Any) -> Any:
        """Given groups override only the fields they name; the other defaults stay."""
        if not isinstance(value, dict):
            return value
        merged = {name: policy.model_dump() for name, policy in _default_groups().items()}
        for name, given in value.items():
            if isinstance(given, RouteGroupPolicy):
                given = given.model_dump(exclude_unset=True)
            base = merged.setdefault(name, RouteGroupPolicy().model_dump())
            for key, item in dict(given).items():
                if isinstance(item, BaseModel):
                    item = item.model_dump(exclude_unset=True)
                if isinstance(item, dict) and isinstance(base.get(key), dict):
                    base[key] = {**base[key], **item}
                else:
                    base[key] = item
        return merged

    def upstreams(self) -> dict[str, str]:
        """Upstream base URLs by service name."""
        return {
            "identity": self.identity_url.rstrip("/"),
            "agents": self.agents_url.rstrip("/"),
            "chat": self.chat_url.rstrip("/"),
        }

    def policy(self, group: str) -> RouteGroupPolicy:
        return self.groups.get(group) or RouteGroupPolicy()

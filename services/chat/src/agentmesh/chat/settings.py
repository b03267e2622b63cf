"""Settings of the chat service: ``CHAT_*`` plus the shared ``AGENTMESH_*``."""

from decimal import Decimal

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from agentmesh.shared.outbound import AllowedPrivateHosts, OutboundPolicy
from agentmesh.shared.settings import ServiceSettings


class Price(BaseModel):
    """USD per million tokens."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)


def _default_prices() -> dict[str, Price]:
    return {
        "offline": Price(),
        "gpt-4o-mini": Price(input=Decimal("0.15"), output=Decimal("0.60")),
        "gpt-4o": Price(input=Decimal("2.50"), output=Decimal("10")),
        "claude-3-5-haiku-latest": Price(input=Decimal("0.80"), output=Decimal("4")),
    }


class ChatSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore")

    service_name: str = "chat"
    port: int = Field(default=8083, ge=0, le=65535)
    #: Presented on agents.rpc.* requests; shared by the platform.
    internal_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("AGENTMESH_INTERNAL_TOKEN", "CHAT_INTERNAL_TOKEN"),
    )
    #: Price table, JSON: {"model": {"input": usd_per_mtok, "output": usd_per_mtok}}.
    #: A model missing from it costs 0 (its tokens still count).
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    #: SSE comment sent when a stream has been idle this long.
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    #: Provider credentials fetched over the agents RPC are reused this long.
    credentials_ttl_seconds: float = Field(default=60.0, ge=0)
    rpc_timeout_seconds: float = Field(default=5.0, gt=0)
    #: Per MCP session (connect, list or call a tool) with an agent's MCP server.
    mcp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    #: Per model call (connect + read) of a real provider.
    model_timeout_seconds: float = Field(default=60.0, gt=0)
    model_attempts: int = Field(default=3, ge=1, le=10)
    #: Most model calls in one run's tool loop.
    max_tool_steps: int = Field(default=6, ge=1, le=50)
    #: Tokens reserved against a budget while a run is in flight (when the agent sets
    #: no max_output_tokens).
    default_reserve_tokens: int = Field(default=1024, ge=1)
    #: How often a replica marks the runs it is executing as alive (one UPDATE for all
    #: of them) and sweeps for runs whose replica stopped.
    run_heartbeat_seconds: float = Field(default=5.0, gt=0)
    #: A running run whose heartbeat is older than this is failed by any replica's sweep
    #: (default: three heartbeats).
    run_orphan_seconds: float | None = Field(default=None, gt=0)
    #: A run waiting for a person to approve a tool call ends ``expired`` after this
    #: (``CHAT_APPROVAL_TIMEOUT_SECONDS``; default 24 h), and its reservation is released.
    approval_timeout_seconds: float = Field(default=86_400.0, gt=0)
    #: Let the http_request tool and MCP servers reach private addresses (tests, labs).
    allow_private_network: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "CHAT_ALLOW_PRIVATE_NETWORK", "AGENTMESH_ALLOW_PRIVATE_NETWORK"
        ),
    )
    #: Private addresses outbound calls may reach without opening them all:
    #: ``host:port`` (``127.0.0.1:11434`` for Ollama) and CIDR (``10.0.0.0/8``) entries.
    allowed_private_hosts: AllowedPrivateHosts = Field(
        default=(),
        validation_alias=AliasChoices(
            "AGENTMESH_ALLOWED_PRIVATE_HOSTS", "CHAT_ALLOWED_PRIVATE_HOSTS", "allowed_private_hosts"
        ),
    )

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """What ``agentmesh.shared.outbound`` clients may reach (metadata: never)."""
        return OutboundPolicy(self.allow_private_network, self.allowed_private_hosts)

    @property
    def run_orphan_after(self) -> float:
        """Seconds without a heartbeat after which a running run counts as orphaned."""
        return self.run_orphan_seconds or 3 * self.run_heartbeat_seconds

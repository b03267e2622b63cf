"""Settings of the agents service: ``AGENTS_*`` plus the shared ``AGENTMESH_*``."""

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from agentmesh.shared.outbound import AllowedPrivateHosts, OutboundPolicy
from agentmesh.shared.settings import ServiceSettings


class AgentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTS_", extra="ignore")

    service_name: str = "agents"
    port: int = Field(default=8082, ge=0, le=65535)
    #: Encrypts provider API keys at rest (any long random string).
    provider_encryption_key: SecretStr = SecretStr("")
    #: Callers of agents.rpc.* (chat) present this; shared by the platform.
    internal_token: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("AGENTMESH_INTERNAL_TOKEN", "AGENTS_INTERNAL_TOKEN"),
    )
    #: Largest document accepted by POST /knowledge-bases/{id}/documents.
    max_document_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    #: HNSW candidate list size at query time (recall vs speed).
    hnsw_ef_search: int = Field(default=100, ge=10, le=1000)
    #: Keyword search ranks at most this many chunks, those holding the query's rarest
    #: words, not every chunk holding any of its words (quality vs speed: 2-8 us a chunk
    #: plus 0.5 us a query word; bench.knowledge_search: hybrid p95 < 20 ms at 100k).
    keyword_candidate_cap: int = Field(default=800, ge=200, le=1_000_000)
    #: Timeout of POST /providers/{id}/test.
    provider_test_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    #: Let MCP servers (and other outbound calls) reach private, loopback and link-local
    #: addresses. Off by default: users could otherwise probe the platform's own network.
    allow_private_network: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "AGENTMESH_ALLOW_PRIVATE_NETWORK", "AGENTS_ALLOW_PRIVATE_NETWORK"
        ),
    )
    #: Private addresses outbound calls may reach without opening them all:
    #: ``host:port`` (``127.0.0.1:11434`` for Ollama) and CIDR (``10.0.0.0/8``) entries.
    allowed_private_hosts: AllowedPrivateHosts = Field(
        default=(),
        validation_alias=AliasChoices(
            "AGENTMESH_ALLOWED_PRIVATE_HOSTS",
            "AGENTS_ALLOWED_PRIVATE_HOSTS",
            "allowed_private_hosts",
        ),
    )

    @property
    def outbound_policy(self) -> OutboundPolicy:
        """What ``agentmesh.shared.outbound`` clients may reach (metadata: never)."""
        return OutboundPolicy(self.allow_private_network, self.allowed_private_hosts)

    #: Timeout of connecting to an MCP server and listing its tools.
    mcp_timeout_seconds: float = Field(default=10.0, gt=0, le=60)

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
    #: Documents this replica indexes at once, each in its own worker process (0: an
    #: API-only replica that indexes nothing).
    ingest_concurrency: int = Field(default=2, ge=0, le=64)
    #: Documents of one owner indexed at once across all replicas, so one user's many
    #: uploads do not hold every slot; the claim takes owners in turn.
    ingest_per_user_concurrency: int = Field(default=1, ge=1, le=64)
    #: A claimed document's lease, renewed every third of it while indexing; a replica
    #: that dies leaves its documents to the others once it runs out.
    ingest_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    #: A document still indexing after this ends ``failed`` (its worker process is killed).
    ingest_document_timeout_seconds: float = Field(default=900.0, gt=0, le=86400)
    #: How often an idle worker looks for documents queued by other replicas.
    ingest_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    #: Niceness of the worker processes: indexing yields the CPU to requests.
    ingest_worker_nice: int = Field(default=10, ge=0, le=19)

"""Settings of the gateway: ``GATEWAY_*`` plus the shared ``AGENTMESH_*``."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from agentmesh.shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    service_name: str = "gateway"
    port: int = Field(default=8080, ge=0, le=65535)
    identity_url: str = "http://127.0.0.1:8081"
    agents_url: str = "http://127.0.0.1:8082"
    chat_url: str = "http://127.0.0.1:8083"
    #: Seconds an upstream's readiness probe may take.
    upstream_health_timeout: float = Field(default=2.0, gt=0)

    def upstreams(self) -> dict[str, str]:
        """Upstream base URLs by service name."""
        return {
            "identity": self.identity_url.rstrip("/"),
            "agents": self.agents_url.rstrip("/"),
            "chat": self.chat_url.rstrip("/"),
        }

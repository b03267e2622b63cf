"""Settings of the agents service: ``AGENTS_*`` plus the shared ``AGENTMESH_*``."""

from pydantic_settings import SettingsConfigDict

from agentmesh.shared.settings import ServiceSettings


class AgentsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTS_", extra="ignore")

    service_name: str = "agents"

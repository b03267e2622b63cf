"""Settings of the chat service: ``CHAT_*`` plus the shared ``AGENTMESH_*``."""

from pydantic_settings import SettingsConfigDict

from agentmesh.shared.settings import ServiceSettings


class ChatSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CHAT_", extra="ignore")

    service_name: str = "chat"

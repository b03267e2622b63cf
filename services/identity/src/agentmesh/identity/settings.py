"""Settings of the identity service: ``IDENTITY_*`` plus the shared ``AGENTMESH_*``."""

from pydantic_settings import SettingsConfigDict

from agentmesh.shared.settings import ServiceSettings


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IDENTITY_", extra="ignore")

    service_name: str = "identity"

"""The agents service's encryption box, and its part of ``agentmesh secrets rotate``:
provider API keys and MCP auth headers re-encrypted under the newest key."""

from __future__ import annotations

from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.crypto import SecretBox


def secret_box(settings: AgentsSettings) -> SecretBox:
    """Encrypts provider keys and MCP headers (``AGENTS_PROVIDER_ENCRYPTION_KEY``)."""
    return SecretBox(
        settings.provider_encryption_key.get_secret_value(),
        purpose="agentmesh-agents-provider-keys",
        setting="AGENTS_PROVIDER_ENCRYPTION_KEY",
    )


async def rotate(settings: AgentsSettings | None = None) -> dict[str, int]:
    """Re-encrypt every stored secret of agents under the newest key; rows rewritten."""
    from agentmesh.agents.mcp.models import McpServer
    from agentmesh.agents.providers.models import Provider
    from agentmesh.shared import db
    from agentmesh.shared.rotation import reencrypt_column

    settings = settings or AgentsSettings()
    box = secret_box(settings)
    engine = db.create_engine(settings.common, application_name="agentmesh-secrets-rotate")
    sessionmaker = db.create_sessionmaker(engine)
    try:
        return {
            "agents provider keys": await reencrypt_column(
                sessionmaker, box, Provider.id, Provider.api_key_encrypted
            ),
            "agents MCP headers": await reencrypt_column(
                sessionmaker, box, McpServer.id, McpServer.auth_header_value_encrypted
            ),
        }
    finally:
        await engine.dispose()

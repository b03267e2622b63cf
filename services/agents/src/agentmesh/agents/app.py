"""The agents service: app factory and lifespan."""

from fastapi import FastAPI

from agentmesh.agents import events
from agentmesh.agents.agents.router import router as agents_router
from agentmesh.agents.base import EVENT_TABLES
from agentmesh.agents.providers import rpc
from agentmesh.agents.providers.router import router as providers_router
from agentmesh.agents.settings import AgentsSettings
from agentmesh.agents.tools.router import router as tools_router
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: AgentsSettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the agents app; ``runtime_options`` go to ``ServiceRuntime`` (tests use them)."""
    settings = settings or AgentsSettings()
    runtime = ServiceRuntime("agents", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    box = SecretBox(
        settings.provider_encryption_key.get_secret_value(),
        purpose="agentmesh-agents-provider-keys",
        setting="AGENTS_PROVIDER_ENCRYPTION_KEY",
    )
    assert runtime.broker is not None and runtime.sessionmaker is not None
    rpc.register(
        runtime.broker, runtime.sessionmaker, box, settings.internal_token.get_secret_value()
    )
    app = runtime.create_app(
        title="AgentMesh agents",
        description="Agents with versioned configs, model providers, the tools catalog.",
        routers=[agents_router, providers_router, tools_router],
    )
    app.state.secret_box = box
    return app

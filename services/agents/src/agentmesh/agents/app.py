"""The agents service: app factory and lifespan."""

from fastapi import FastAPI

from agentmesh.agents import events
from agentmesh.agents.agents.router import router as agents_router
from agentmesh.agents.base import EVENT_TABLES
from agentmesh.agents.settings import AgentsSettings
from agentmesh.agents.tools.router import router as tools_router
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: AgentsSettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the agents app; ``runtime_options`` go to ``ServiceRuntime`` (tests use them)."""
    settings = settings or AgentsSettings()
    runtime = ServiceRuntime("agents", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    return runtime.create_app(
        title="AgentMesh agents",
        description="Agents with versioned configs, the tools catalog.",
        routers=[agents_router, tools_router],
    )

"""The identity service: app factory and lifespan."""

from fastapi import FastAPI

from agentmesh.identity import events
from agentmesh.identity.models import EVENT_TABLES
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: IdentitySettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the identity app; ``runtime_options`` go to ``ServiceRuntime`` (tests use them)."""
    settings = settings or IdentitySettings()
    runtime = ServiceRuntime("identity", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    return runtime.create_app(title="AgentMesh identity")

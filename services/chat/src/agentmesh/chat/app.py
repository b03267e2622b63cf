"""The chat service: app factory and lifespan."""

from fastapi import FastAPI

from agentmesh.chat import events
from agentmesh.chat.models import EVENT_TABLES
from agentmesh.chat.settings import ChatSettings
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: ChatSettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the chat app; ``runtime_options`` go to ``ServiceRuntime`` (tests use them)."""
    settings = settings or ChatSettings()
    runtime = ServiceRuntime("chat", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    return runtime.create_app(title="AgentMesh chat")

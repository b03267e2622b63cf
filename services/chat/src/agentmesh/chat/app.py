"""The chat service: app factory and lifespan."""

import asyncio
import contextlib
import uuid

from fastapi import FastAPI
from faststream.nats import NatsMessage

from agentmesh.chat import events
from agentmesh.chat.agents_client import AgentsClient
from agentmesh.chat.conversations.router import router as conversations_router
from agentmesh.chat.conversations_api.router import router as conversations_api_router
from agentmesh.chat.llm.resolve import warm_providers
from agentmesh.chat.models import EVENT_TABLES
from agentmesh.chat.openai_compat.router import router as openai_router
from agentmesh.chat.openai_compat.router import unknown_router as openai_unknown_router
from agentmesh.chat.responses.router import router as responses_router
from agentmesh.chat.runs.approvals_router import router as approvals_router
from agentmesh.chat.runs.executor import RunExecutor
from agentmesh.chat.runs.hub import RunHub
from agentmesh.chat.runs.orphans import RunWatch
from agentmesh.chat.runs.router import CANCEL_SUBJECT, cancel_local
from agentmesh.chat.runs.router import router as runs_router
from agentmesh.chat.runs.templating import Profiles
from agentmesh.chat.settings import ChatSettings
from agentmesh.chat.usage.router import budgets_router
from agentmesh.chat.usage.router import router as usage_router
from agentmesh.chat.usage.workspace_budgets import router as workspace_budgets_router
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: ChatSettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the chat app; ``runtime_options`` go to ``ServiceRuntime`` (tests use them)."""
    settings = settings or ChatSettings.load()
    runtime = ServiceRuntime("chat", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    assert runtime.broker is not None
    hub = RunHub(runtime.broker)

    @runtime.broker.subscriber(
        f"{CANCEL_SUBJECT}.*",
        title="chat.control.cancel.<run_id>",
        description="Cancel a run on whichever replica runs it",
    )
    async def on_cancel(body: bytes, msg: NatsMessage) -> None:
        subject = msg.raw_message.subject
        with contextlib.suppress(ValueError):
            cancel_local(hub, uuid.UUID(subject.rsplit(".", 1)[-1]))

    app = runtime.create_app(
        title="AgentMesh chat",
        description="Conversations, LangChain runs with tools and memory, resumable streams.",
        routers=[
            openai_router,  # first: the model path is matched before any other route
            conversations_router,
            runs_router,
            approvals_router,
            usage_router,
            budgets_router,
            workspace_budgets_router,
            responses_router,
            conversations_api_router,
            openai_unknown_router,  # last: its catch-all answers any other /v1 path
        ],
    )
    app.state.hub = hub
    app.state.agents_client = AgentsClient(
        runtime.broker,
        settings.internal_token.get_secret_value(),
        timeout=settings.rpc_timeout_seconds,
        ttl=settings.credentials_ttl_seconds,
        tracer_provider=runtime.tracer_provider,
    )
    app.state.profiles = Profiles(
        runtime.broker,
        settings.internal_token.get_secret_value(),
        timeout=settings.rpc_timeout_seconds,
    )
    app.state.executor = RunExecutor(app.state)
    runtime.startup_hooks.append(_warm_providers)
    # Heartbeats of this replica's runs, and the sweep that ends runs of stopped replicas.
    app.state.run_watch = watch = RunWatch(app.state)
    runtime.startup_hooks.append(watch.start)
    runtime.shutdown_hooks.append(watch.stop)
    runtime.shutdown_hooks.append(hub.stop)
    return app


async def _warm_providers(app: FastAPI) -> None:
    """The provider SDKs, imported before serving, off the event loop (see warm_providers)."""
    await asyncio.to_thread(warm_providers)

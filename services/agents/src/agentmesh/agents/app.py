"""The agents service: app factory and lifespan."""

from fastapi import FastAPI

from agentmesh.agents import events
from agentmesh.agents.agents.router import router as agents_router
from agentmesh.agents.base import EVENT_TABLES
from agentmesh.agents.embeddings.local import shared_model
from agentmesh.agents.knowledge import rpc as knowledge_rpc
from agentmesh.agents.knowledge.embedding import Embedder
from agentmesh.agents.knowledge.router import router as knowledge_router
from agentmesh.agents.knowledge.worker import IngestWorker
from agentmesh.agents.mcp import rpc as mcp_rpc
from agentmesh.agents.mcp.router import router as mcp_router
from agentmesh.agents.providers import rpc
from agentmesh.agents.providers.router import router as providers_router
from agentmesh.agents.secrets import secret_box
from agentmesh.agents.settings import AgentsSettings
from agentmesh.agents.tools.router import router as tools_router
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: AgentsSettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the agents app; ``runtime_options`` go to ``ServiceRuntime`` (tests use them)."""
    settings = settings or AgentsSettings.load()
    runtime = ServiceRuntime("agents", settings, tables=EVENT_TABLES, **runtime_options)  # type: ignore[arg-type]
    events.register(runtime)
    box = secret_box(settings)
    assert runtime.broker is not None and runtime.sessionmaker is not None
    rpc.register(
        runtime.broker, runtime.sessionmaker, box, settings.internal_token.get_secret_value()
    )
    mcp_rpc.register(
        runtime.broker, runtime.sessionmaker, box, settings.internal_token.get_secret_value()
    )
    app = runtime.create_app(
        title="AgentMesh agents",
        description="Agents with versioned configs, model providers, the tools catalog.",
        routers=[agents_router, providers_router, knowledge_router, mcp_router, tools_router],
    )
    app.state.secret_box = box
    app.state.embeddings = shared_model()
    app.state.embedder = Embedder(app.state.embeddings, box, policy=settings.outbound_policy)
    knowledge_rpc.register(
        runtime.broker,
        runtime.sessionmaker,
        app.state.embedder,
        settings.internal_token.get_secret_value(),
        settings.hnsw_ef_search,
        settings.keyword_candidate_cap,
    )

    async def start_ingest(app: FastAPI) -> None:
        # Documents are durable jobs: whatever is queued, or was left half done by a
        # replica that died, is claimed by the worker loop (not in the way of start-up).
        assert runtime.sessionmaker is not None and runtime.outbox is not None
        app.state.ingest = IngestWorker(
            runtime.sessionmaker, runtime.outbox, app.state.embedder, settings
        )
        app.state.ingest.start()

    async def close_remote_embedders(app: FastAPI) -> None:
        await app.state.embedder.remotes.aclose()

    async def stop_ingest(app: FastAPI) -> None:
        await app.state.ingest.stop()

    runtime.startup_hooks.append(start_ingest)
    # Hooks stop in reverse: the worker first, then the clients it may still use.
    runtime.shutdown_hooks.append(close_remote_embedders)
    runtime.shutdown_hooks.append(stop_ingest)
    return app

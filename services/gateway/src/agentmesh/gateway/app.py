"""The gateway: app factory and lifespan. Stateless: no database."""

from fastapi import FastAPI

from agentmesh.gateway.settings import GatewaySettings
from agentmesh.gateway.upstreams import create_client, readiness_checks
from agentmesh.shared.runtime import ServiceRuntime


def create_app(settings: GatewaySettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the gateway app; ``runtime_options`` go to ``ServiceRuntime``."""
    settings = settings or GatewaySettings()
    runtime = ServiceRuntime(
        "gateway",
        settings,
        use_database=False,
        use_broker=False,
        **runtime_options,  # type: ignore[arg-type]
    )

    async def open_client(app: FastAPI) -> None:
        app.state.http = create_client(settings)

    async def close_client(app: FastAPI) -> None:
        await app.state.http.aclose()

    runtime.startup_hooks.append(open_client)
    runtime.shutdown_hooks.append(close_client)
    app = runtime.create_app(title="AgentMesh gateway")
    # The health router reads this mapping per request, so adding checks now is enough.
    runtime.readiness.update(readiness_checks(app, settings))
    return app

"""The gateway's shared upstream HTTP client and readiness probes."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from agentmesh.gateway.settings import GatewaySettings
from agentmesh.shared.health import ReadinessCheck


def create_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """One pooled client for every upstream."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.upstream_health_timeout, connect=1.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=100),
    )


def readiness_checks(app: FastAPI, settings: GatewaySettings) -> dict[str, ReadinessCheck]:
    """One readiness check per upstream: its own ``/health/ready`` answers 200."""

    def probe(base_url: str) -> ReadinessCheck:
        async def check() -> None:
            client: httpx.AsyncClient = app.state.http
            response = await client.get(f"{base_url}/health/ready")
            if response.status_code != 200:
                raise ConnectionError(f"not ready ({response.status_code})")

        return check

    return {name: probe(url) for name, url in settings.upstreams().items()}

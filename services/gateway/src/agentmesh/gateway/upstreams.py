"""Readiness probes of the gateway's upstreams."""

from __future__ import annotations

import aiohttp
from fastapi import FastAPI

from agentmesh.gateway.settings import GatewaySettings
from agentmesh.shared.health import ReadinessCheck


def readiness_checks(app: FastAPI, settings: GatewaySettings) -> dict[str, ReadinessCheck]:
    """One readiness check per upstream: its own ``/health/ready`` answers 200."""

    def probe(base_url: str) -> ReadinessCheck:
        async def check() -> None:
            session: aiohttp.ClientSession = app.state.http
            timeout = aiohttp.ClientTimeout(total=settings.upstream_health_timeout)
            async with session.get(f"{base_url}/health/ready", timeout=timeout) as response:
                if response.status != 200:
                    raise ConnectionError(f"not ready ({response.status})")

        return check

    return {name: probe(url) for name, url in settings.upstreams().items()}

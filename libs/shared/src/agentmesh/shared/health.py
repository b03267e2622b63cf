"""``/health/live`` and ``/health/ready`` for every service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter
from fastapi.responses import JSONResponse

ReadinessCheck = Callable[[], Awaitable[None]]


def health_router(checks: Mapping[str, ReadinessCheck], *, timeout: float = 2.0) -> APIRouter:
    """Liveness always answers; readiness runs every check (each raising when not ready)."""
    router = APIRouter(prefix="/health", tags=["health"])

    @router.get("/live", summary="Liveness: the process answers")
    async def live() -> dict[str, str]:
        """Always 200 while the process can serve requests."""
        return {"status": "ok"}

    @router.get(
        "/ready",
        summary="Readiness: every dependency answers",
        responses={503: {"description": "A dependency is not ready"}},
    )
    async def ready() -> JSONResponse:
        """200 when every dependency is ready, else 503; the body names each check's state."""
        names = list(checks)
        results = await asyncio.gather(
            *(asyncio.wait_for(checks[name](), timeout) for name in names),
            return_exceptions=True,
        )
        states = {
            name: "ok" if not isinstance(result, BaseException) else _describe(result)
            for name, result in zip(names, results, strict=True)
        }
        ok = all(state == "ok" for state in states.values())
        return JSONResponse(
            {"status": "ready" if ok else "unavailable", "checks": states},
            status_code=200 if ok else 503,
        )

    return router


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    return f"unavailable: {type(error).__name__}"

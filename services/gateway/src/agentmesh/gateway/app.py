"""The gateway: app factory and lifespan. Stateless: no database, any number of replicas."""

from __future__ import annotations

import aiohttp
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.middleware.cors import CORSMiddleware

from agentmesh.gateway import docs_ui, events
from agentmesh.gateway.addresses import TrustedProxies
from agentmesh.gateway.deps import AppDocs
from agentmesh.gateway.docs import DocsCache
from agentmesh.gateway.fastpath import METHODS, Forwarder, ProxyRoute
from agentmesh.gateway.metrics import watch_breakers
from agentmesh.gateway.principals import Authenticator
from agentmesh.gateway.proxy import Proxy
from agentmesh.gateway.ratelimit import RateLimiter
from agentmesh.gateway.routing import PREFIXES
from agentmesh.gateway.security import SecurityHeaders
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.gateway.shared_limits import SharedLimits
from agentmesh.gateway.upstreams import readiness_checks
from agentmesh.shared.auth import JWTVerifier
from agentmesh.shared.runtime import ServiceRuntime


def _shared_limits(
    settings: GatewaySettings, runtime: ServiceRuntime, local: RateLimiter
) -> SharedLimits:
    """The limits every replica shares through NATS (per replica when turned off)."""
    broker = runtime.broker

    def jetstream() -> object | None:
        try:
            state = broker.config.connection_state  # type: ignore[union-attr]
            return state.stream if state.connection.is_connected else None
        except Exception:  # not connected yet (faststream's IncorrectState)
            return None

    limits = [settings.auth_failure_limit] + [p.rate_limit for p in settings.groups.values()]
    # An idle key dropped by the bucket is a full bucket: keep keys until they would be.
    refill = max(limit.burst / limit.rate for limit in limits)
    return SharedLimits(
        jetstream if settings.shared_limits and broker is not None else None,
        local,
        scope=settings.limits_scope,
        batch=settings.limits_batch,
        timeout=settings.limits_timeout_seconds,
        retry_seconds=settings.limits_retry_seconds,
        sync_seconds=settings.limits_sync_seconds,
        ttl_seconds=min(max(refill, settings.api_key_negative_cache_seconds, 60.0), 86_400.0),
    )


def create_app(settings: GatewaySettings | None = None, **runtime_options: object) -> FastAPI:
    """Build the gateway app; ``runtime_options`` go to ``ServiceRuntime``."""
    settings = settings or GatewaySettings.load()
    if "*" in settings.cors_origins and settings.cors_allow_credentials:
        raise ValueError("GATEWAY_CORS_ORIGINS='*' cannot be combined with credentials")
    runtime = ServiceRuntime("gateway", settings, use_database=False, **runtime_options)  # type: ignore[arg-type]
    # NATS only carries cache evictions and the deny list here; an outage must not take the
    # gateway out (it keeps the last known deny list).
    runtime.readiness.pop("nats", None)
    limiter = RateLimiter()
    limits = _shared_limits(settings, runtime, limiter)
    trusted = TrustedProxies(settings.trusted_proxies)
    state: dict[str, object] = {}

    async def open_clients(app: FastAPI) -> None:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=512, limit_per_host=256, ttl_dns_cache=300),
            auto_decompress=False,
            # One session serves every client: a cookie an upstream sets is the client's
            # (passed on in the answer), never to be kept and sent with others' requests.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        verifier = JWTVerifier(
            f"{settings.upstreams()['identity']}/.well-known/jwks.json",
            settings.common.jwt_issuer,
            settings.common.jwt_audience,
            deny_list=runtime.deny_list,
        )
        app.state.http = session
        app.state.verifier = verifier
        app.state.proxy = forwarder.proxy = Proxy(settings, session)
        watch_breakers(app.state.proxy)
        app.state.docs = DocsCache(settings, session)
        authenticator.session = session
        authenticator.verifier = verifier
        state["ready"] = True

    async def close_clients(app: FastAPI) -> None:
        await limits.aclose()
        await app.state.verifier.aclose()
        await app.state.http.close()

    authenticator = Authenticator(settings, None, None, shared=limits)  # type: ignore[arg-type]
    forwarder = Forwarder(settings, authenticator, limits, trusted)
    events.register(runtime, authenticator)
    runtime.startup_hooks.append(open_clients)
    runtime.shutdown_hooks.append(close_clients)
    app = runtime.create_app(
        title="AgentMesh gateway",
        serve_asyncapi=False,
        # The gateway's port is public: its metrics go to AGENTMESH_METRICS_PORT only.
        serve_metrics=False,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.authenticator = authenticator
    app.state.limiter = limiter
    app.state.limits = limits
    runtime.readiness.update(readiness_checks(app, settings))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(docs: AppDocs) -> JSONResponse:
        return JSONResponse(await docs.openapi())

    docs_ui.register(app)

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi(docs: AppDocs) -> JSONResponse:
        return JSONResponse(await docs.asyncapi())

    # The proxied paths before the gateway's own routes; any other path after them. A
    # route of the gateway's own under a proxied prefix would never be reached: refuse it.
    shadowed = [
        route.path
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.path.startswith(PREFIXES)
    ]
    if shadowed:
        raise RuntimeError(f"gateway routes under proxied prefixes: {shadowed}")
    app.router.routes.insert(0, ProxyRoute(forwarder, PREFIXES))
    app.router.routes.append(ProxyRoute(forwarder))

    app.add_middleware(
        SecurityHeaders,
        hsts_seconds=settings.hsts_seconds,
        trusted_proxies=trusted,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=settings.cors_allow_credentials,
            allow_methods=METHODS,
            allow_headers=[
                "Authorization",
                "Content-Type",
                "X-API-Key",
                "X-Request-ID",
                "Last-Event-ID",
            ],
            expose_headers=[
                "X-Request-ID",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "Retry-After",
            ],
        )
    return app

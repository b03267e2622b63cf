"""One OpenAPI document (and one AsyncAPI document) for the whole platform."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from agentmesh.gateway.routing import PUBLIC, resolve
from agentmesh.gateway.settings import GatewaySettings
from agentmesh.shared.openapi import PROBLEM_SCHEMAS, problem_response

SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /api/v1/auth/login, or an API key (am_...).",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key from POST /api/v1/api-keys.",
    },
}
METHODS = ("get", "put", "post", "delete", "patch", "options", "head")
GATEWAY_PATHS: dict[str, Any] = {
    "/health/live": {
        "get": {
            "tags": ["health"],
            "summary": "Liveness",
            "security": [],
            "responses": {"200": {"description": "The gateway answers"}},
        }
    },
    "/health/ready": {
        "get": {
            "tags": ["health"],
            "summary": "Readiness of every upstream",
            "security": [],
            "responses": {
                "200": {"description": "Every upstream is ready"},
                "503": {"description": "An upstream is not"},
            },
        }
    },
}


class DocsCache:
    def __init__(self, settings: GatewaySettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}

    async def _fetch_all(self, path: str) -> dict[str, dict[str, Any] | None]:
        async def one(base: str) -> dict[str, Any] | None:
            try:
                timeout = aiohttp.ClientTimeout(total=self.settings.upstream_health_timeout)
                async with self.session.get(base + path, timeout=timeout) as response:
                    if response.status != 200:
                        return None
                    return await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return None

        upstreams = self.settings.upstreams()
        documents = await asyncio.gather(*(one(url) for url in upstreams.values()))
        return dict(zip(upstreams, documents, strict=True))

    async def _cached(self, key: str, build: Any) -> dict[str, Any]:
        hit = self._cache.get(key)
        if hit and time.monotonic() - hit[0] < self.settings.docs_cache_seconds:
            return hit[1]
        document, complete = await build()
        if complete:  # never cache a document missing a service that is down
            self._cache[key] = (time.monotonic(), document)
        return document

    async def openapi(self) -> dict[str, Any]:
        return await self._cached("openapi", self._build_openapi)

    async def asyncapi(self) -> dict[str, Any]:
        return await self._cached("asyncapi", self._build_asyncapi)

    async def _build_openapi(self) -> tuple[dict[str, Any], bool]:
        documents = await self._fetch_all("/openapi.json")
        paths: dict[str, Any] = dict(GATEWAY_PATHS)
        schemas: dict[str, Any] = {}
        missing = [name for name, doc in documents.items() if doc is None]
        for service, document in documents.items():
            if document is None:
                continue
            document = _rename_conflicts(service, document, schemas)
            schemas.update(document.get("components", {}).get("schemas", {}))
            for path, item in document.get("paths", {}).items():
                kept = {}
                for method, operation in item.items():
                    route = resolve(method.upper(), path) if method in METHODS else None
                    if route is None or route.upstream != service:
                        continue  # not routed publicly (health, internal, asyncapi)
                    operation = {k: v for k, v in operation.items() if k != "security"}
                    public = (method.upper(), path) in PUBLIC
                    if public:
                        operation["security"] = []
                    kept[method] = _with_gateway_errors(operation, public)
                if kept:
                    paths[path] = kept
        description = "Every AgentMesh service's API, through the gateway."
        if missing:
            description += f" Not available right now: {', '.join(missing)}."
        document = {
            "openapi": "3.1.0",
            "info": {"title": "AgentMesh API", "version": "1", "description": description},
            "paths": dict(sorted(paths.items())),
            "components": {
                "schemas": {**PROBLEM_SCHEMAS, **schemas},
                "securitySchemes": SECURITY_SCHEMES,
            },
            "security": [{"bearerAuth": []}, {"apiKey": []}],
        }
        return document, not missing

    async def _build_asyncapi(self) -> tuple[dict[str, Any], bool]:
        documents = await self._fetch_all("/asyncapi")
        merged: dict[str, Any] = {
            "asyncapi": "3.0.0",
            "info": {
                "title": "AgentMesh events",
                "version": "1",
                "description": "Events every AgentMesh service publishes and consumes.",
            },
            "servers": {},
            "channels": {},
            "operations": {},
            "components": {"messages": {}, "schemas": {}},
        }
        for service, document in documents.items():
            if document is None:
                continue
            merged["servers"].update(document.get("servers", {}))
            for section in ("channels", "operations"):
                for name, value in document.get(section, {}).items():
                    key = name if name not in merged[section] else f"{service}.{name}"
                    merged[section][key] = value
            for section in ("messages", "schemas"):
                merged["components"][section].update(
                    document.get("components", {}).get(section, {})
                )
        return merged, all(doc is not None for doc in documents.values())


def _with_gateway_errors(operation: dict[str, Any], public: bool) -> dict[str, Any]:
    """``operation`` with the errors the gateway answers itself before the service sees the
    request: 401 (credentials), 429 (rate limits), 413 (body size). An operation with a
    ``default`` response (OpenAI's error shape on /v1) already covers them."""
    responses = dict(operation.get("responses", {}))
    if "default" in responses:
        return operation
    if not public:
        responses.setdefault("401", problem_response("Missing, invalid or expired credentials"))
    responses.setdefault("429", problem_response("Rate limited; see Retry-After"))
    if "requestBody" in operation:
        responses.setdefault("413", problem_response("The body is over this route's limit"))
    return {**operation, "responses": responses}


def _rename_conflicts(service: str, document: dict[str, Any], seen: dict[str, Any]):
    """Prefix a schema name with the service when another service defined it differently."""
    schemas = document.get("components", {}).get("schemas", {})
    conflicts = [name for name, schema in schemas.items() if name in seen and seen[name] != schema]
    if not conflicts:
        return document
    text = json.dumps(document)
    for name in conflicts:
        text = text.replace(
            f'"#/components/schemas/{name}"', f'"#/components/schemas/{service}_{name}"'
        )
    renamed = json.loads(text)
    components = renamed["components"]["schemas"]
    for name in conflicts:
        components[f"{service}_{name}"] = components.pop(name)
    return renamed

"""Chat's client of the agents RPCs (core NATS request/reply, internal token).

Provider credentials and MCP connections (decrypted keys and auth headers) are cached
briefly in memory, bounded (``CACHE_SIZE`` entries each) and expiring after ``ttl``,
never stored in the database.

Every request names the workspace of the agent being run (``workspace_id``): agents
answers with that workspace's providers, MCP servers and knowledge bases (a request
without it means the user's personal workspace).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from cachetools import TTLCache
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, TracerProvider

from agentmesh.shared.errors import AppError

#: Most entries of each cache (credentials, MCP connections).
CACHE_SIZE = 1024


class AgentsUnavailable(AppError):
    status, type, title = 503, "agents-unavailable", "Service Unavailable"


class ProviderMissing(AppError):
    status, type, title = 409, "provider-unavailable", "Conflict"


class McpServerMissing(AppError):
    status, type, title = 409, "mcp-server-unavailable", "Conflict"


class KnowledgeBaseMissing(AppError):
    status, type, title = 409, "knowledge-base-unavailable", "Conflict"


class KnowledgeSearchFailed(AppError):
    status, type, title = 502, "knowledge-search-failed", "Bad Gateway"


def nats_client(broker: Any) -> Any:
    """The broker's nats-py client, or None before the first connection."""
    try:
        return broker.config.connection_state.connection
    except Exception:
        return None


class AgentsClient:
    def __init__(
        self,
        broker: Any,
        internal_token: str,
        *,
        timeout: float,
        ttl: float,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.broker = broker
        self.tracer = trace.get_tracer(
            "agentmesh.chat.agents_client", tracer_provider=tracer_provider
        )
        self.token = internal_token
        self.timeout = timeout
        self.ttl = ttl
        Key = tuple[uuid.UUID, uuid.UUID, uuid.UUID]  # workspace, user, provider or server
        self._cache: TTLCache[Key, dict[str, Any]] | None = None
        self._mcp_cache: TTLCache[Key, dict[str, Any]] | None = None
        if ttl > 0:
            self._cache = TTLCache(maxsize=CACHE_SIZE, ttl=ttl)
            self._mcp_cache = TTLCache(maxsize=CACHE_SIZE, ttl=ttl)

    async def _request(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        nc = nats_client(self.broker)
        if nc is None or not nc.is_connected:
            raise AgentsUnavailable("The agents service can't be reached (no NATS connection).")
        attributes = {
            "messaging.system": "nats",
            "messaging.destination.name": subject,
            "messaging.operation.type": "send",
        }
        # A client span, its context in the headers: agents' consumer span (FastStream's
        # telemetry middleware extracts it) joins the caller's trace.
        with self.tracer.start_as_current_span(
            f"{subject} publish", kind=SpanKind.CLIENT, attributes=attributes
        ):
            headers = {"Authorization": f"Bearer {self.token}"}
            propagate.inject(headers)
            try:
                reply = await nc.request(
                    subject, json.dumps(body).encode(), timeout=self.timeout, headers=headers
                )
            except Exception as exc:  # timeout, no responders
                raise AgentsUnavailable(
                    f"The agents service did not answer ({type(exc).__name__})."
                ) from exc
        return json.loads(reply.data)

    async def credentials(
        self, user_id: uuid.UUID, provider_id: uuid.UUID, *, workspace_id: uuid.UUID
    ) -> dict[str, Any]:
        key = (workspace_id, user_id, provider_id)
        hit = self._cache.get(key) if self._cache is not None else None
        if hit is not None:
            return hit
        answer = await self._request(
            "agents.rpc.provider.credentials",
            {
                "workspace_id": str(workspace_id),
                "user_id": str(user_id),
                "provider_id": str(provider_id),
            },
        )
        if "error" in answer:
            raise ProviderMissing(
                "The agent's model provider is gone or not in its workspace; update the agent."
            )
        if self._cache is not None:
            self._cache[key] = answer
        return answer

    async def mcp_connection(
        self, user_id: uuid.UUID, server_id: uuid.UUID, *, workspace_id: uuid.UUID
    ) -> dict[str, Any]:
        """``{"url", "headers"}`` of the workspace's MCP server (headers hold its auth value)."""
        key = (workspace_id, user_id, server_id)
        hit = self._mcp_cache.get(key) if self._mcp_cache is not None else None
        if hit is not None:
            return hit
        answer = await self._request(
            "agents.rpc.mcp.connection",
            {
                "workspace_id": str(workspace_id),
                "user_id": str(user_id),
                "server_id": str(server_id),
            },
        )
        if "error" in answer:
            raise McpServerMissing(
                f"The MCP server is gone or not in the agent's workspace ({answer['error']})."
            )
        if self._mcp_cache is not None:
            self._mcp_cache[key] = answer
        return answer

    async def knowledge_search(
        self,
        user_id: uuid.UUID,
        kb_ids: list[str],
        query: str,
        top_k: int,
        *,
        workspace_id: uuid.UUID,
    ) -> list[dict[str, Any]]:
        answer = await self._request(
            "agents.rpc.knowledge.search",
            {
                "workspace_id": str(workspace_id),
                "user_id": str(user_id),
                "knowledge_base_ids": kb_ids,
                "query": query,
                "top_k": top_k,
            },
        )
        if answer.get("error") == "not_found":
            raise KnowledgeBaseMissing(
                "A knowledge base of the agent is gone or not in its workspace; update the agent."
            )
        if "error" in answer:
            detail = answer.get("detail") or answer["error"]
            raise KnowledgeSearchFailed(f"The knowledge search failed: {detail}.")
        return list(answer["results"])

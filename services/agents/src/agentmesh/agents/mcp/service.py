"""MCP servers: CRUD with an encrypted auth header, and a live listing of their tools."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.mcp.models import McpServer
from agentmesh.agents.mcp.schemas import (
    McpServerCreate,
    McpServerOut,
    McpServerUpdate,
    McpToolOut,
)
from agentmesh.agents.workspaces import can_see
from agentmesh.shared import outbound
from agentmesh.shared.access import Access
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.errors import AppError, NotFound
from agentmesh.shared.outbound import AddressNotAllowed, BlockedAddress, OutboundPolicy
from agentmesh.shared.pagination import paginate

logger = logging.getLogger("agentmesh.agents.mcp")

#: Shorter values would give away too much of themselves in their last 4 characters.
LAST4_MIN_LENGTH = 12
#: A server that pages forever must not hold a request forever (the timeout also applies).
MAX_TOOL_PAGES = 20


class McpServerNotFound(NotFound):
    type, title = "mcp-server-not-found", "MCP server not found"


class McpServerUnreachable(AppError):
    status, type, title = 502, "mcp-server-unreachable", "MCP server unreachable"


def to_out(server: McpServer, *, secrets: bool) -> McpServerOut:
    """The server as shown; ``secrets``: with the auth value's last 4 characters (admins)."""
    return McpServerOut(
        id=server.id,
        owner_id=server.owner_id,
        workspace_id=server.workspace_id,
        name=server.name,
        url=server.url,
        auth_header_name=server.auth_header_name,
        has_auth=server.auth_header_value_encrypted is not None,
        auth_header_value_last4=server.auth_header_value_last4 if secrets else None,
        created_at=server.created_at,
        updated_at=server.updated_at,
    )


async def check_address(url: str, allow_private: bool | OutboundPolicy) -> None:
    """422 naming ``url`` unless the platform may connect to it (same rules as http_request)."""
    await outbound.check_field(url, allow_private, "url")


def _set_auth(box: SecretBox, server: McpServer, name: str | None, value: str | None) -> None:
    if not value:
        server.auth_header_name = None
        server.auth_header_value_encrypted = server.auth_header_value_last4 = None
        return
    server.auth_header_name = name or "Authorization"
    server.auth_header_value_encrypted = box.encrypt(value.encode())
    server.auth_header_value_last4 = value[-4:] if len(value) >= LAST4_MIN_LENGTH else None


def auth_headers(box: SecretBox, server: McpServer) -> dict[str, str]:
    """The decrypted auth header, to send to the server (never to log or show)."""
    if server.auth_header_value_encrypted is None or not server.auth_header_name:
        return {}
    return {server.auth_header_name: box.decrypt(server.auth_header_value_encrypted).decode()}


async def get_owned(
    session: AsyncSession, access: Access | uuid.UUID, server_id: uuid.UUID
) -> McpServer:
    """The server if it is of the caller's workspace (``access``, or a workspace id for
    services), or the caller is a platform admin."""
    server = await session.get(McpServer, server_id)
    if server is None or not can_see(access, server.workspace_id):
        raise McpServerNotFound("No such MCP server.")
    return server


async def list_owned(
    session: AsyncSession, access: Access, *, limit: int, cursor: str | None
) -> tuple[list[McpServer], str | None]:
    """One page of the workspace's MCP servers, oldest first."""
    query = select(McpServer).where(McpServer.workspace_id == access.workspace_id)
    return await paginate(
        session, query, (McpServer.created_at, McpServer.id), limit=limit, cursor=cursor
    )


async def create(
    session: AsyncSession,
    box: SecretBox,
    access: Access,
    body: McpServerCreate,
    *,
    allow_private: bool | OutboundPolicy,
) -> McpServer:
    url = str(body.url)
    await check_address(url, allow_private)  # before the session's first query
    server = McpServer(
        owner_id=access.user_id, workspace_id=access.workspace_id, name=body.name, url=url
    )
    value = body.auth_header_value.get_secret_value() if body.auth_header_value else None
    _set_auth(box, server, body.auth_header_name, value)
    session.add(server)
    await session.flush()
    await session.refresh(server)
    return server


async def update(
    session: AsyncSession,
    box: SecretBox,
    server: McpServer,
    body: McpServerUpdate,
) -> McpServer:
    """Apply a partial update; the caller has checked a new ``url`` (``check_address``)
    before loading ``server``, so no name is resolved while the session holds a connection."""
    if body.name is not None:
        server.name = body.name
    if body.url is not None:
        server.url = str(body.url)
    if "auth_header_value" in body.model_fields_set:
        value = body.auth_header_value.get_secret_value() if body.auth_header_value else None
        _set_auth(box, server, body.auth_header_name or server.auth_header_name, value)
    elif body.auth_header_name is not None:
        if server.auth_header_value_encrypted is None:
            raise AppError(
                "auth_header_name: the server has no auth header; send auth_header_value too.",
                status=422,
                type="validation-error",
                title="Unprocessable Content",
                extra={"field": "auth_header_name"},
            )
        server.auth_header_name = body.auth_header_name
    server.updated_at = datetime.now(UTC)
    await session.flush()
    await session.refresh(server)
    return server


async def list_tools(
    box: SecretBox, server: McpServer, *, timeout: float, allow_private: bool | OutboundPolicy
) -> list[McpToolOut]:
    """Connect over streamable HTTP and list every tool of the server, with its schema."""
    await check_address(server.url, allow_private)
    headers = auth_headers(box, server)
    statuses: list[int] = []

    async def record_status(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = outbound.async_client2(
        allow_private,
        headers=headers,
        timeout=httpx2.Timeout(timeout),
        event_hooks={"response": [record_status]},
    )
    try:
        async with (
            asyncio.timeout(timeout),
            http,
            Client(streamable_http_client(server.url, http_client=http)) as client,
        ):
            return await _all_tools(client)
    except Exception as exc:  # whatever the server does, the caller gets a clean 502
        blocked = _leaf(exc)
        if isinstance(blocked, BlockedAddress):
            raise AddressNotAllowed(f"url: {blocked}", extra={"field": "url"}) from None
        reason = _reason(exc, statuses, timeout, headers)
        logger.info(
            "mcp server unreachable", extra={"mcp_server_id": str(server.id), "reason": reason}
        )
        raise McpServerUnreachable(f"{reason}.") from None


async def _all_tools(client: Client) -> list[McpToolOut]:
    tools: list[McpToolOut] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += [
            McpToolOut(name=tool.name, description=tool.description, input_schema=tool.input_schema)
            for tool in page.tools
        ]
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (possibly nested) exception groups of the SDK's tasks."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _reason(
    exc: BaseException, statuses: list[int], timeout: float, headers: dict[str, str]
) -> str:
    """A short, clean reason: no traceback, and never the auth header's value."""
    leaf = _leaf(exc)
    failed = next((status for status in statuses if status >= 400), None)
    if failed in (401, 403):
        return f"The MCP server refused the credentials (HTTP {failed})"
    if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
        return f"The MCP server did not answer within {timeout:g} seconds"
    if isinstance(leaf, httpx2.TransportError):
        return f"The MCP server cannot be reached ({type(leaf).__name__})"
    if failed is not None:
        return f"The MCP server answered HTTP {failed}"
    if isinstance(leaf, MCPError):
        return f"The MCP server answered with an error: {_mask(leaf.message, headers)[:200]}"
    return f"The server's answer is not valid MCP ({type(leaf).__name__})"


def _mask(text: str, headers: dict[str, str]) -> str:
    """``text`` with the auth value, and each long part of it (a bare token), masked."""
    for value in headers.values():
        for secret in sorted({value, *value.split()}, key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, "***")
    return text

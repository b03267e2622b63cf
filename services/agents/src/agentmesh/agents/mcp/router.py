from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, status

from agentmesh.agents.deps import AppSecretBox, AppSettings
from agentmesh.agents.mcp import service
from agentmesh.agents.mcp.schemas import (
    McpServerCreate,
    McpServerOut,
    McpServerPage,
    McpServerUpdate,
    McpToolOut,
)
from agentmesh.agents.workspaces import FORBIDDEN, AgentsRead, ProvidersWrite, sees_secrets
from agentmesh.shared.db import Session, release
from agentmesh.shared.pagination import CURSOR_RESPONSES, DEFAULT_LIMIT, Cursor, Limit

router = APIRouter(prefix="/api/v1/mcp-servers", tags=["mcp-servers"], responses=FORBIDDEN)
NOT_YOURS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such MCP server in your workspace"}
}
BLOCKED: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid body, or the URL reaches a private address"}
}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=McpServerOut, responses=BLOCKED
)
async def create_mcp_server(
    body: McpServerCreate,
    caller: ProvidersWrite,
    session: Session,
    box: AppSecretBox,
    settings: AppSettings,
) -> McpServerOut:
    """Register a remote MCP server in the workspace (admins and owners) by its streamable
    HTTP URL, with an optional auth header (e.g. ``Authorization: Bearer ...``). The
    header's value is encrypted at rest and never shown again. Private, loopback and
    metadata addresses are refused, as for ``http_request``."""
    server = await service.create(
        session, box, caller, body, allow_private=settings.outbound_policy
    )
    return service.to_out(server, secrets=sees_secrets(caller))


@router.get("", response_model=McpServerPage, responses=CURSOR_RESPONSES)
async def list_mcp_servers(
    caller: AgentsRead, session: Session, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None
) -> McpServerPage:
    """The workspace's MCP servers, oldest first, one page at a time."""
    servers, next_cursor = await service.list_owned(session, caller, limit=limit, cursor=cursor)
    secrets = sees_secrets(caller)
    items = [service.to_out(s, secrets=secrets) for s in servers]
    return McpServerPage(items=items, next_cursor=next_cursor)


@router.get("/{server_id}", response_model=McpServerOut, responses=NOT_YOURS)
async def get_mcp_server(
    server_id: uuid.UUID, caller: AgentsRead, session: Session
) -> McpServerOut:
    """One MCP server (never its auth header's value)."""
    server = await service.get_owned(session, caller, server_id)
    return service.to_out(server, secrets=sees_secrets(caller))


@router.patch("/{server_id}", response_model=McpServerOut, responses={**NOT_YOURS, **BLOCKED})
async def update_mcp_server(
    server_id: uuid.UUID,
    body: McpServerUpdate,
    caller: ProvidersWrite,
    session: Session,
    box: AppSecretBox,
    settings: AppSettings,
) -> McpServerOut:
    """Rename, move or re-key an MCP server (``"auth_header_value": null`` removes the
    header)."""
    if body.url is not None:  # resolves the name: before the session takes a connection
        await service.check_address(str(body.url), settings.outbound_policy)
    server = await service.get_owned(session, caller, server_id)
    updated = await service.update(session, box, server, body)
    return service.to_out(updated, secrets=sees_secrets(caller))


@router.delete("/{server_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_YOURS)
async def delete_mcp_server(server_id: uuid.UUID, caller: ProvidersWrite, session: Session) -> None:
    """Remove an MCP server and its auth header. Agents that enable its tools keep their
    config until they are next saved, which then fails until the tools are removed."""
    await session.delete(await service.get_owned(session, caller, server_id))


@router.get(
    "/{server_id}/tools",
    response_model=list[McpToolOut],
    responses={
        **NOT_YOURS,
        422: {"description": "The URL now reaches a private address"},
        502: {"description": "The server could not be reached, refused the auth, or failed"},
    },
)
async def list_mcp_server_tools(
    server_id: uuid.UUID,
    caller: AgentsRead,
    session: Session,
    box: AppSecretBox,
    settings: AppSettings,
) -> list[McpToolOut]:
    """Connect to the server now and list its tools, with the JSON schema of each tool's
    arguments. Agents enable them by name: ``{"id": "mcp", "config": {"server_id": ...,
    "tools": [...]}}``."""
    server = await service.get_owned(session, caller, server_id)
    await release(session)  # the server may take its time: not on a pooled connection
    return await service.list_tools(
        box,
        server,
        timeout=settings.mcp_timeout_seconds,
        allow_private=settings.outbound_policy,
    )

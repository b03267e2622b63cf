"""The agent's MCP tools, as LangChain tools that call the user's MCP servers over MCP.

For each ``{"id": "mcp", "config": {"server_id", "tools"}}`` ref: the server's URL and auth
header come from the agents service (``agents.rpc.mcp.connection``), the URL is checked
like ``http_request``'s, and the server's tools are listed over streamable HTTP. Each
enabled tool opens its own MCP session when called. A failing tool never raises: the
model gets an ``Error: ...`` tool result (langchain-mcp-adapters doesn't work with mcp 2.x,
hence this small bridge over ``mcp.Client``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
from langchain_core.tools import BaseTool, StructuredTool
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent, Tool

from agentmesh.chat.agents_client import AgentsClient
from agentmesh.shared import outbound
from agentmesh.shared.outbound import BlockedAddress, OutboundPolicy
from agentmesh.shared.tools.netguard import check_url

logger = logging.getLogger("agentmesh.chat.mcp")

#: A server that pages forever must not hold a run forever (the timeout also applies).
MAX_TOOL_PAGES = 20
#: Longest tool result handed to the model.
MAX_RESULT_CHARS = 20_000


class _Session:
    """Opens an MCP client session to one server and runs ``work`` in it, within a timeout."""

    def __init__(
        self, connection: dict[str, Any], *, allow_private: bool | OutboundPolicy, timeout: float
    ):
        self.url = str(connection["url"])
        self.headers = {str(k): str(v) for k, v in (connection.get("headers") or {}).items()}
        self.allow_private = allow_private
        self.timeout = timeout
        self.statuses: list[int] = []

    async def run(self, work: Callable[[Client], Awaitable[Any]]) -> Any:
        await check_url(self.url, allow_private=self.allow_private)

        async def record_status(response: httpx2.Response) -> None:
            self.statuses.append(response.status_code)

        http = outbound.async_client2(
            self.allow_private,
            headers=self.headers,
            timeout=httpx2.Timeout(self.timeout),
            event_hooks={"response": [record_status]},
        )
        async with (
            asyncio.timeout(self.timeout),
            http,
            Client(streamable_http_client(self.url, http_client=http)) as client,
        ):
            return await work(client)

    def reason(self, exc: BaseException) -> str:
        """A short reason for ``exc``: no traceback, never the auth header's value."""
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
        failed = next((status for status in self.statuses if status >= 400), None)
        if isinstance(exc, BlockedAddress):
            return f"the MCP server's address is not allowed ({exc})"
        if failed in (401, 403):
            return f"the MCP server refused the credentials (HTTP {failed})"
        if isinstance(exc, TimeoutError | httpx2.TimeoutException):
            return f"the MCP server did not answer within {self.timeout:g} seconds"
        if isinstance(exc, httpx2.TransportError):
            return f"the MCP server cannot be reached ({type(exc).__name__})"
        if failed is not None:
            return f"the MCP server answered HTTP {failed}"
        if isinstance(exc, MCPError):
            return f"the MCP server answered with an error: {self.mask(exc.message)[:500]}"
        return f"the MCP call failed ({type(exc).__name__})"

    def mask(self, text: str) -> str:
        for value in self.headers.values():
            for secret in sorted({value, *value.split()}, key=len, reverse=True):
                if len(secret) >= 4:
                    text = text.replace(secret, "***")
        return text


async def _list_tools(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        if cursor is None:
            break
    return tools


def result_text(result: CallToolResult) -> str:
    """The text the model sees: the text content, else the structured content."""
    parts = [
        item.text if isinstance(item, TextContent) else f"[{item.type} content]"
        for item in result.content
    ]
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, default=str)
    return text[:MAX_RESULT_CHARS]


def _tool(
    tool: Tool, connection: dict[str, Any], *, allow_private: bool | OutboundPolicy, timeout: float
) -> BaseTool:
    async def call(**args: Any) -> str:
        session = _Session(connection, allow_private=allow_private, timeout=timeout)
        try:
            result: CallToolResult = await session.run(
                lambda client: client.call_tool(tool.name, args)
            )
        except Exception as exc:  # unreachable, timeout, protocol error: the model is told
            reason = session.reason(exc)
            logger.info("mcp tool call failed", extra={"tool": tool.name, "reason": reason})
            return f"Error: {reason}."
        text = session.mask(result_text(result))
        return f"Error: {text or 'the tool failed'}" if result.is_error else text

    schema = dict(tool.input_schema or {}) or {"type": "object", "properties": {}}
    return StructuredTool(
        name=tool.name,
        description=tool.description or tool.title or tool.name,
        args_schema=schema,
        coroutine=call,
    )


async def mcp_tools(
    client: AgentsClient,
    user_id: uuid.UUID,
    refs: list[dict[str, Any]],
    *,
    workspace_id: uuid.UUID,
    allow_private: bool | OutboundPolicy,
    timeout: float,
) -> list[BaseTool]:
    """LangChain tools for the ``mcp`` refs of an agent. A server that is gone, refused or
    unreachable is left out with a warning: the run goes on without its tools."""
    tools: list[BaseTool] = []
    for ref in refs:
        if ref.get("id") != "mcp":
            continue
        config = ref.get("config") or {}
        try:
            server_id = uuid.UUID(str(config["server_id"]))
            wanted = [str(name) for name in config.get("tools") or []]
        except (KeyError, ValueError, TypeError):
            logger.warning("mcp tool ref without a valid server_id; skipped")
            continue
        extra = {"mcp_server_id": str(server_id)}
        session: _Session | None = None
        try:
            connection = await client.mcp_connection(user_id, server_id, workspace_id=workspace_id)
            session = _Session(connection, allow_private=allow_private, timeout=timeout)
            listed = {tool.name: tool for tool in await session.run(_list_tools)}
        except Exception as exc:
            reason = session.reason(exc) if session else getattr(exc, "detail", None) or str(exc)
            logger.warning("mcp server left out of the run: %s", reason, extra=extra)
            continue
        for name in wanted:
            if name not in listed:
                logger.warning("mcp server has no tool %r; skipped", name, extra=extra)
                continue
            tools.append(
                _tool(listed[name], connection, allow_private=allow_private, timeout=timeout)
            )
    return tools

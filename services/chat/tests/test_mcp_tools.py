"""Chat runs call the agent's MCP tools over MCP, on a real MCP server the tests start
(the mcp SDK's MCPServer over streamable HTTP, behind a bearer token). Tool errors go
back to the model as tool results; every call and result is streamed and stored."""

from __future__ import annotations

import json
import logging
import uuid

import nats
import pytest
from mcp.server.mcpserver import MCPServer
from starlette.responses import JSONResponse

from agentmesh.chat.mcp_tools import mcp_tools
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, serve_app

from .test_conversations import parse_sse

CONV = "/api/v1/conversations"
SERVERS = "/api/v1/mcp-servers"
TOKEN = "mcp-test-token-0123456789WXYZ"
AUTH = f"Bearer {TOKEN}"
UNREACHABLE = "http://127.0.0.1:9/mcp"


def require_bearer(app):
    """ASGI middleware: 401 unless the request carries ``Authorization: Bearer TOKEN``."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != (
            AUTH.encode()
        ):
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": "no"}}
            await JSONResponse(body, status_code=401)(scope, receive, send)
            return
        await app(scope, receive, send)

    return guarded


@pytest.fixture
async def mcp_url():
    """A real MCP server over streamable HTTP on loopback, behind a token."""
    server = MCPServer("chat-test-tools", log_level="WARNING")

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def fail() -> str:
        """Always fails."""
        raise RuntimeError("the fail tool broke on purpose")

    async with serve_app(require_bearer(server.streamable_http_app())) as base_url:
        yield f"{base_url}/mcp"


async def register(agents, headers, url: str, auth: str | None = AUTH) -> str:
    body = {"name": "Test tools", "url": url, "auth_header_value": auth}
    response = await agents.post(SERVERS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def ask(chat, headers, agent_id: str, content: str) -> tuple[list[dict], str]:
    conversation = (await chat.post(CONV, json={"agent_id": agent_id}, headers=headers)).json()
    response = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        json={"content": content, "stream": True},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return parse_sse(response.text), conversation["id"]


def of(events: list[dict], kind: str) -> list[dict]:
    return [e["data"] for e in events if e["event"] == kind]


async def test_a_run_calls_the_mcp_tool_and_keeps_the_call(
    agents, chat, make_agent, token_issuer, mcp_url
):
    headers = token_issuer.headers()
    server_id = await register(agents, headers, mcp_url)
    ref = {
        "id": "mcp",
        "config": {"server_id": server_id, "tools": ["shout", "fail", "gone"]},
        "policy": "always_allow",
    }
    agent = await make_agent(headers, tools=[ref])

    events, conversation_id = await ask(chat, headers, agent["id"], "Use the shout tool on hi")
    [call] = of(events, "tool.call")
    assert call["name"] == "shout" and call["args"] == {"text": "Use the shout tool on hi"}
    [result] = of(events, "tool.result")
    assert result == {"id": call["id"], "name": "shout", "result": "USE THE SHOUT TOOL ON HI"}
    [completed] = of(events, "message.completed")
    assert completed["status"] == "completed" and "USE THE SHOUT TOOL ON HI" in completed["content"]
    assert completed["tool_calls"] == [{**call, "result": "USE THE SHOUT TOOL ON HI"}]
    assert events[-1]["event"] == "done" and events[-1]["data"]["status"] == "completed"

    history = (await chat.get(f"{CONV}/{conversation_id}/messages", headers=headers)).json()
    stored = history["items"][-1]
    assert stored["role"] == "assistant" and stored["status"] == "completed"
    assert stored["tool_calls"] == [{**call, "result": "USE THE SHOUT TOOL ON HI"}]
    assert TOKEN not in json.dumps(history) and TOKEN not in json.dumps(events)


async def test_a_failing_tool_is_a_tool_result_not_a_failed_run(
    agents, chat, make_agent, token_issuer, mcp_url
):
    headers = token_issuer.headers()
    server_id = await register(agents, headers, mcp_url)
    agent = await make_agent(
        headers,
        tools=[
            {
                "id": "mcp",
                "config": {"server_id": server_id, "tools": ["fail"]},
                "policy": "always_allow",
            }
        ],
    )
    events, conversation_id = await ask(chat, headers, agent["id"], "Please call the fail tool")
    assert [c["name"] for c in of(events, "tool.call")] == ["fail"]
    [result] = of(events, "tool.result")
    assert result["result"] == "Error: Error executing tool fail"  # the server's isError text
    assert of(events, "run.failed") == [] and events[-1]["data"]["status"] == "completed"
    history = (await chat.get(f"{CONV}/{conversation_id}/messages", headers=headers)).json()
    assert history["items"][-1]["tool_calls"][0]["result"] == result["result"]


async def test_an_unreachable_server_leaves_its_tools_out(
    agents, chat, make_agent, token_issuer, caplog
):
    headers = token_issuer.headers()
    server_id = await register(agents, headers, UNREACHABLE)
    agent = await make_agent(
        headers,
        tools=[
            {
                "id": "mcp",
                "config": {"server_id": server_id, "tools": ["shout"]},
                "policy": "always_allow",
            }
        ],
    )
    with caplog.at_level(logging.WARNING, logger="agentmesh.chat.mcp"):
        events, _ = await ask(chat, headers, agent["id"], "Use the shout tool on hi")
    assert of(events, "tool.call") == [] and events[-1]["data"]["status"] == "completed"
    assert "mcp server left out of the run" in caplog.text and TOKEN not in caplog.text


class FixedConnection:
    """Stands in for AgentsClient: always the same connection."""

    def __init__(self, url: str, auth: str = AUTH) -> None:
        self.connection = {"url": url, "headers": {"Authorization": auth}}

    async def mcp_connection(self, user_id, server_id, *, workspace_id):
        return self.connection


async def test_tool_errors_never_raise(mcp_url, caplog):
    refs = [{"id": "mcp", "config": {"server_id": str(uuid.uuid4()), "tools": ["add", "nope"]}}]
    client = FixedConnection(mcp_url)
    with caplog.at_level(logging.WARNING, logger="agentmesh.chat.mcp"):
        [add] = await mcp_tools(
            client, uuid.uuid4(), refs, workspace_id=uuid.uuid4(), allow_private=True, timeout=5
        )
    assert "has no tool 'nope'" in caplog.text
    assert add.args["a"]["type"] == "integer"
    assert await add.ainvoke({"a": 2, "b": 40}) == "42"
    assert (await add.ainvoke({"a": "x"})).startswith("Error:")  # refused by the server
    client.connection["headers"]["Authorization"] = "Bearer wrong"
    assert "refused the credentials (HTTP 401)" in await add.ainvoke({"a": 1, "b": 2})
    client.connection["url"] = UNREACHABLE
    assert await add.ainvoke({"a": 1, "b": 2}) == (
        "Error: the MCP server cannot be reached (ConnectError)."
    )
    # Loopback is refused unless private addresses are allowed, at listing time too.
    assert (
        await mcp_tools(
            FixedConnection(mcp_url),
            uuid.uuid4(),
            refs,
            workspace_id=uuid.uuid4(),
            allow_private=False,
            timeout=5,
        )
        == []
    )


async def test_connection_rpc_answers_the_owner_only(agents, token_issuer, nats_url, mcp_url):
    owner_id = uuid.uuid4()
    server_id = await register(agents, token_issuer.headers(owner_id), mcp_url)
    nc = await nats.connect(nats_url)

    async def ask_rpc(body: dict, token: str | None = TEST_INTERNAL_TOKEN) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        reply = await nc.request(
            "agents.rpc.mcp.connection", json.dumps(body).encode(), timeout=10, headers=headers
        )
        return json.loads(reply.data)

    try:
        mine = {"user_id": str(owner_id), "server_id": server_id}
        assert await ask_rpc(mine) == {"url": mcp_url, "headers": {"Authorization": AUTH}}
        assert await ask_rpc(mine, None) == {"error": "unauthorized"}
        assert await ask_rpc(mine, "not-the-token") == {"error": "unauthorized"}
        stranger = {"user_id": str(uuid.uuid4()), "server_id": server_id}
        assert await ask_rpc(stranger) == {"error": "not_found"}
        missing = {"user_id": str(owner_id), "server_id": str(uuid.uuid4())}
        assert await ask_rpc(missing) == {"error": "not_found"}
        assert await ask_rpc({"user_id": str(owner_id)}) == {"error": "bad_request"}
        assert await ask_rpc({"user_id": "x", "server_id": server_id}) == {"error": "bad_request"}
    finally:
        await nc.close()

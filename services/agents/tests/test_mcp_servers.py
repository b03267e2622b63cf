"""MCP servers: encrypted auth header, address rules, live tool listing from a real MCP
server (the mcp SDK's MCPServer over streamable HTTP), ownership, agents, erasure."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import httpx2
import nats
import pytest
from mcp.server.mcpserver import MCPServer
from nats.js.api import DeliverPolicy
from sqlalchemy import func, select
from starlette.responses import JSONResponse

from agentmesh.agents.app import create_app
from agentmesh.agents.mcp.models import McpServer
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared.events.contracts import UserDeleted
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.outbound import BlockedAddress, GuardedTransport2, OutboundPolicy
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
    serve_app,
)

SERVERS = "/api/v1/mcp-servers"
TOKEN = "s3cret-token-0123456789WXYZ"
AUTH = f"Bearer {TOKEN}"
UNREACHABLE = "http://127.0.0.1:9/mcp"
PROBLEM = "application/problem+json"


@pytest.fixture
async def agents_private(common_settings, token_issuer):
    """The agents app allowed to reach loopback, where the test MCP server listens."""
    common = common_settings.model_copy(update={"jwks_url": token_issuer.jwks_url})
    app = create_app(
        AgentsSettings(
            common=common,
            provider_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
            allow_private_network=True,
            mcp_timeout_seconds=5,
        )
    )
    async with app_client(app) as client:
        client.app = app
        yield client


def require_bearer(app):
    """ASGI middleware: 401 (echoing what it got, as careless servers do) unless the
    request carries ``Authorization: Bearer TOKEN``."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            got = dict(scope["headers"]).get(b"authorization", b"").decode()
            if got != AUTH:
                error = {"code": -32001, "message": f"bad credentials: {got}"}
                body = {"jsonrpc": "2.0", "id": None, "error": error}
                await JSONResponse(body, status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    return guarded


@pytest.fixture
async def mcp_url():
    """A real MCP server with two tools, over streamable HTTP on loopback, behind a token."""
    server = MCPServer("test-tools", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    async with serve_app(require_bearer(server.streamable_http_app())) as base_url:
        yield f"{base_url}/mcp"


@pytest.fixture
async def slow_url():
    """A server that takes longer to answer than the MCP timeout of the test."""

    async def slow(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await asyncio.sleep(2)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serve_app(slow) as base_url:
        yield base_url


async def create(client, headers, **body):
    body = {"name": "Tools", "url": UNREACHABLE, "auth_header_value": AUTH, **body}
    response = await client.post(SERVERS, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


async def test_crud_with_the_auth_value_encrypted_and_never_shown(
    agents_private, token_issuer, caplog
):
    headers = token_issuer.headers()
    created = await create(agents_private, headers)
    assert created["auth_header_name"] == "Authorization" and created["has_auth"] is True
    assert created["auth_header_value_last4"] == "WXYZ" and created["url"] == UNREACHABLE
    url = f"{SERVERS}/{created['id']}"
    listing = await agents_private.get(SERVERS, headers=headers)
    assert [s["id"] for s in listing.json()["items"]] == [created["id"]]
    for response in (listing, await agents_private.get(url, headers=headers)):
        assert response.status_code == 200 and TOKEN not in response.text
    async with agents_private.app.state.sessionmaker() as session:
        row = await session.get(McpServer, uuid.UUID(created["id"]))
    assert TOKEN.encode() not in row.auth_header_value_encrypted
    assert TOKEN not in repr([getattr(row, c.key) for c in McpServer.__table__.columns])
    box = agents_private.app.state.secret_box
    assert box.decrypt(row.auth_header_value_encrypted).decode() == AUTH

    renamed = await agents_private.patch(
        url,
        json={"name": "Renamed", "url": "http://127.0.0.1:10/mcp", "auth_header_name": "X-Key"},
        headers=headers,
    )
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Renamed" and renamed.json()["auth_header_name"] == "X-Key"
    assert renamed.json()["auth_header_value_last4"] == "WXYZ"
    short = await agents_private.patch(url, json={"auth_header_value": "abc12345"}, headers=headers)
    assert short.json()["has_auth"] is True and short.json()["auth_header_value_last4"] is None
    cleared = await agents_private.patch(url, json={"auth_header_value": None}, headers=headers)
    assert cleared.json()["has_auth"] is False and cleared.json()["auth_header_name"] is None
    nameless = await agents_private.patch(url, json={"auth_header_name": "X-Key"}, headers=headers)
    assert nameless.status_code == 422 and nameless.json()["field"] == "auth_header_name"

    assert (await agents_private.delete(url, headers=headers)).status_code == 204
    gone = await agents_private.get(url, headers=headers)
    assert gone.status_code == 404 and gone.headers["content-type"] == PROBLEM
    assert TOKEN not in caplog.text


async def test_tools_are_listed_with_their_schemas(agents_private, token_issuer, mcp_url):
    headers = token_issuer.headers()
    server = await create(agents_private, headers, url=mcp_url)
    response = await agents_private.get(f"{SERVERS}/{server['id']}/tools", headers=headers)
    assert response.status_code == 200, response.text
    tools = {tool["name"]: tool for tool in response.json()}
    assert set(tools) == {"add", "shout"}
    assert tools["add"]["description"] == "Add two integers."
    assert tools["add"]["input_schema"]["required"] == ["a", "b"]
    assert tools["add"]["input_schema"]["properties"]["a"]["type"] == "integer"
    assert tools["shout"]["input_schema"]["properties"]["text"]["type"] == "string"


async def test_failures_are_clean_502_problems(
    agents_private, token_issuer, mcp_url, slow_url, caplog
):
    headers = token_issuer.headers()
    wrong_token = "wrong-token-9876543210abcd"
    cases = {
        "refused the credentials (HTTP 401)": {"url": mcp_url, "auth_header_value": wrong_token},
        "refused the credentials": {"url": mcp_url, "auth_header_value": None},
        "cannot be reached (ConnectError)": {"url": UNREACHABLE},
        "answered HTTP 404": {"url": mcp_url.replace("/mcp", "/nothing-here")},
        "did not answer within 0.5 seconds": {"url": f"{slow_url}/mcp"},
    }
    agents_private.app.state.settings.mcp_timeout_seconds = 0.5
    for expected, body in cases.items():
        server = await create(agents_private, headers, **body)
        response = await agents_private.get(f"{SERVERS}/{server['id']}/tools", headers=headers)
        assert response.status_code == 502, response.text
        assert response.headers["content-type"] == PROBLEM
        problem = response.json()
        assert problem["type"].endswith("/mcp-server-unreachable")
        assert expected in problem["detail"], problem["detail"]
        assert "Traceback" not in problem["detail"]
        for secret in (wrong_token, TOKEN):
            assert secret not in response.text
    assert wrong_token not in caplog.text and TOKEN not in caplog.text


async def test_private_addresses_are_refused_unless_allowed(
    agents, agents_private, token_issuer, mcp_url
):
    headers = token_issuer.headers()
    for url in (mcp_url, "http://169.254.169.254/mcp", "http://[::1]:8000/mcp", "http://10.0.0.7/"):
        response = await agents.post(SERVERS, json={"name": "x", "url": url}, headers=headers)
        assert response.status_code == 422, url
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["field"] == "url"
    bad_bodies = (
        {"name": "x", "url": "ftp://example.com/mcp"},
        {"name": "x", "url": "http://user:pw@example.com/mcp"},
        {"name": "x", "url": mcp_url, "auth_header_name": "Host", "auth_header_value": "x"},
        {"name": "x", "url": mcp_url, "auth_header_value": "Bearer a\r\nX-Evil: 1"},
    )
    for body in bad_bodies:
        response = await agents_private.post(SERVERS, json=body, headers=headers)
        assert response.status_code == 422, body

    # The rules apply again when connecting: the setting may have changed since.
    server = await create(agents_private, headers, url=mcp_url)
    moved = await agents.patch(
        f"{SERVERS}/{server['id']}", json={"url": "http://127.0.0.2/mcp"}, headers=headers
    )
    assert moved.status_code == 422 and moved.json()["field"] == "url"
    tools = await agents.get(f"{SERVERS}/{server['id']}/tools", headers=headers)
    assert tools.status_code == 422 and tools.json()["field"] == "url"


async def test_every_request_is_checked_and_pinned(mcp_url):
    """The SDK's HTTP client (httpx2) connects only to addresses the guard checked, so a
    DNS answer that changes after the check cannot reach a private address."""
    async with httpx2.AsyncClient(transport=GuardedTransport2()) as http:
        with pytest.raises(BlockedAddress, match="loopback"):
            await http.post(mcp_url, json={})
    open_policy = OutboundPolicy(allow_private=True)
    async with httpx2.AsyncClient(transport=GuardedTransport2(open_policy)) as http:
        response = await http.post(mcp_url, json={}, headers={"Authorization": AUTH})
        assert response.status_code != 401  # reached the server, with the header


async def test_servers_are_private_to_their_workspace(agents_private, token_issuer, mcp_url):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    server = await create(agents_private, owner, url=mcp_url)
    url = f"{SERVERS}/{server['id']}"
    for method, path in (("GET", url), ("PATCH", url), ("DELETE", url), ("GET", f"{url}/tools")):
        response = await agents_private.request(
            method, path, json={"name": "mine"} if method == "PATCH" else None, headers=stranger
        )
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == PROBLEM
    assert (await agents_private.get(SERVERS, headers=stranger)).json()["items"] == []
    admin = token_issuer.headers(roles=("admin",))
    assert (await agents_private.get(url, headers=admin)).status_code == 200
    # A platform admin reads any server by id; lists show the token's workspace only.
    assert (await agents_private.get(SERVERS, headers=admin)).json()["items"] == []
    assert (await agents_private.get(url, headers=owner)).json()["name"] == "Tools"


async def test_agents_enable_tools_of_their_owners_servers(agents_private, token_issuer):
    owner, other = token_issuer.headers(), token_issuer.headers()
    # Never contacted when an agent is saved: an unreachable server is fine here.
    server = await create(agents_private, owner)
    tool = {"id": "mcp", "config": {"server_id": server["id"], "tools": ["add", "shout"]}}
    body = {"name": "Bot", "tools": [{"id": "calculator"}, tool]}
    created = await agents_private.post("/api/v1/agents", json=body, headers=owner)
    assert created.status_code == 201, created.text
    assert created.json()["tools"][1] == tool

    stolen = await agents_private.post("/api/v1/agents", json=body, headers=other)
    assert stolen.status_code == 422 and stolen.headers["content-type"] == PROBLEM
    assert stolen.json()["field"] == "tools[1].config.server_id"
    missing = {"id": "mcp", "config": {"server_id": str(uuid.uuid4()), "tools": ["add"]}}
    response = await agents_private.patch(
        f"/api/v1/agents/{created.json()['id']}", json={"tools": [missing]}, headers=owner
    )
    assert response.status_code == 422
    assert response.json()["field"] == "tools[0].config.server_id"
    for config, field in (
        ({"server_id": server["id"]}, "tools[0].config.tools"),
        ({"server_id": server["id"], "tools": []}, "tools[0].config.tools"),
        ({"server_id": "nope", "tools": ["add"]}, "tools[0].config.server_id"),
    ):
        response = await agents_private.post(
            "/api/v1/agents",
            json={"name": "Bot", "tools": [{"id": "mcp", "config": config}]},
            headers=owner,
        )
        assert response.status_code == 422 and response.json()["field"] == field, config


async def test_erasure_removes_the_users_mcp_servers(agents_private, token_issuer, nats_url):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    for name in ("One", "Two"):
        await create(agents_private, headers, name=name)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    completions = await js.subscribe("agents.erasure.completed", deliver_policy=DeliverPolicy.NEW)
    try:
        envelope = Envelope.wrap(
            UserDeleted(user_id=user_id, requested_at=datetime.now(UTC)), source="identity"
        )
        await js.publish(
            envelope.type, envelope.model_dump_json().encode(), headers={"Nats-Msg-Id": envelope.id}
        )
        while True:
            message = await completions.next_msg(timeout=30)
            if json.loads(message.data)["data"]["user_id"] == str(user_id):
                break
    finally:
        await nc.close()
    assert (await agents_private.get(SERVERS, headers=headers)).json()["items"] == []
    async with agents_private.app.state.sessionmaker() as session:
        left = await session.scalar(
            select(func.count()).select_from(McpServer).where(McpServer.owner_id == user_id)
        )
    assert left == 0

"""A stored tool config outside the catalog's bounds (an agent version saved before they
were enforced) is clamped when the tool runs: it cannot buy a bigger response."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route

from agentmesh.chat.models import AgentSnapshot
from agentmesh.shared.testing.fixtures import serve_app
from agentmesh.shared.tools.configs import HttpRequestConfig

CONV = "/api/v1/conversations"
MOST = HttpRequestConfig.model_fields["max_response_bytes"].metadata[-1].le  # 5_000_000


@pytest.fixture
async def big_server():
    """Answers ``/http_request`` (the path names the tool for the offline model) with
    more bytes than any config may read."""

    async def big(request):
        async def chunks():
            for _ in range(MOST // 100_000 + 1):
                yield b"x" * 100_000

        return StreamingResponse(chunks(), media_type="text/plain")

    async with serve_app(Starlette(routes=[Route("/http_request", big)])) as url:
        yield url


@pytest.mark.parametrize(("stored", "used"), [(10**12, MOST), (0, 1), ("lots", 100_000)])
async def test_an_out_of_range_stored_config_is_clamped_at_run_time(
    chat, make_agent, token_issuer, big_server, stored, used
):
    headers = token_issuer.headers()
    tool = {"id": "http_request", "config": {"allowed_hosts": ["127.0.0.1"]}}
    agent = await make_agent(headers, tools=[tool])
    # As an old version would hold it: written past the agents service's checks.
    old = {**tool, "config": {**tool["config"], "max_response_bytes": stored}}
    async with chat.app.state.sessionmaker.begin() as session:
        snapshot = await session.get(AgentSnapshot, uuid.UUID(agent["id"]))
        config = {**snapshot.config, "tools": [old]}
        await session.execute(
            update(AgentSnapshot)
            .where(AgentSnapshot.agent_id == snapshot.agent_id)
            .values(config=config)
        )
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    answer = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        json={"content": f"{big_server}/http_request"},
        headers=headers,
    )
    assert answer.status_code == 200, answer.text
    [call] = answer.json()["tool_calls"]
    assert call["name"] == "http_request"
    body, _, note = call["result"].split("Body:\n", 1)[1].rpartition("\n")
    assert note == f"[truncated: the response was longer than {used} bytes]"
    assert body == "x" * used

"""Built-in tool configs are checked against the bounds the tools catalog publishes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from agentmesh.agents.agents.models import AgentVersion
from agentmesh.shared.tools.configs import TOOL_CONFIGS

AGENTS = "/api/v1/agents"
HOSTS = {"allowed_hosts": ["api.example.com"]}


@pytest.fixture
def headers(token_issuer) -> dict[str, str]:
    return token_issuer.headers(uuid.uuid4())


def agent_with(tool_id: str, config: dict) -> dict:
    return {"name": "Fetcher", "tools": [{"id": tool_id, "config": config}]}


async def test_the_catalog_publishes_the_bounds_agents_are_checked_against(agents, headers):
    catalog = (await agents.get("/api/v1/tools", headers=headers)).json()
    by_id = {tool["id"]: tool for tool in catalog}
    assert set(by_id) == set(TOOL_CONFIGS)
    config = by_id["http_request"]["config"]
    timeout = config["properties"]["timeout_seconds"]
    assert (timeout["minimum"], timeout["maximum"]) == (0.1, 60)
    assert config["properties"]["max_response_bytes"]["maximum"] == 5_000_000
    assert config["properties"]["allowed_hosts"]["maxItems"] == 50
    assert config["required"] == ["allowed_hosts"] and config["additionalProperties"] is False
    for tool_id, model in TOOL_CONFIGS.items():  # generated from the models: no drift
        expected = {k: v for k, v in model.model_json_schema().items() if k != "title"}
        expected.pop("description", None)
        assert by_id[tool_id]["config"] == expected


@pytest.mark.parametrize(
    ("tool_id", "config", "field"),
    [
        ("http_request", {**HOSTS, "timeout_seconds": 0}, "timeout_seconds"),
        ("http_request", {**HOSTS, "timeout_seconds": 3600}, "timeout_seconds"),
        ("http_request", {**HOSTS, "max_response_bytes": 0}, "max_response_bytes"),
        ("http_request", {**HOSTS, "max_response_bytes": 10**9}, "max_response_bytes"),
        ("http_request", {**HOSTS, "timeout_seconds": "soon"}, "timeout_seconds"),
        ("http_request", {"allowed_hosts": [f"h{i}.example" for i in range(51)]}, "allowed_hosts"),
        ("http_request", {"allowed_hosts": ["a host/with a path"]}, "allowed_hosts.0"),
        ("http_request", {}, "allowed_hosts"),
        ("http_request", {**HOSTS, "follow_everything": True}, "follow_everything"),
        ("calculator", {"precision": 5}, "precision"),
    ],
)
async def test_an_out_of_range_config_is_a_422_naming_the_field(
    agents, headers, tool_id, config, field
):
    response = await agents.post(AGENTS, json=agent_with(tool_id, config), headers=headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert problem["field"] == f"tools[0].config.{field}"
    assert problem["detail"].startswith(f"tools[0].config.{field}: ")
    assert problem["errors"][0]["loc"] == ["body", "tools", "0", "config", *field.split(".")]


async def test_a_config_within_the_bounds_is_kept(agents, headers):
    config = {**HOSTS, "timeout_seconds": 60, "max_response_bytes": 5_000_000}
    created = await agents.post(AGENTS, json=agent_with("http_request", config), headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["tools"] == [{"id": "http_request", "config": config}]


async def test_update_and_restore_are_checked_too(agents, headers):
    created = await agents.post(AGENTS, json=agent_with("http_request", HOSTS), headers=headers)
    url = f"{AGENTS}/{created.json()['id']}"
    tools = [{"id": "http_request", "config": {**HOSTS, "timeout_seconds": 61}}]
    patched = await agents.patch(url, json={"tools": tools}, headers=headers)
    assert patched.status_code == 422 and patched.json()["field"] == (
        "tools[0].config.timeout_seconds"
    )
    # A version stored before the bounds were checked cannot come back through restore.
    stored = (await agents.get(f"{url}/versions/1", headers=headers)).json()["config"]
    async with agents.app.state.sessionmaker.begin() as session:
        await session.execute(
            update(AgentVersion)
            .where(AgentVersion.agent_id == uuid.UUID(created.json()["id"]))
            .values(config={**stored, "tools": tools})
        )
    restored = await agents.post(f"{url}/versions/1/restore", headers=headers)
    assert restored.status_code == 422, restored.text
    assert restored.json()["field"] == "tools[0].config.timeout_seconds"
    assert (await agents.get(url, headers=headers)).json()["version"] == 1

"""Failures the schemathesis fuzz run (``tests/fuzz``) found, each as the request it sent."""

from __future__ import annotations

import uuid

import pytest

AGENTS = "/api/v1/agents"
KEEPER = {"name": "Keeper", "instructions": "Keep notes.", "model": "offline"}


@pytest.fixture
def headers(token_issuer) -> dict[str, str]:
    return token_issuer.headers(uuid.uuid4())


def problem(response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.json()["type"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("field", ["name", "instructions", "model"])
async def test_patch_with_null_for_a_field_that_cannot_be_null_is_422(agents, headers, field):
    """PATCH {"name": null, ...} was a 500: the null reached the stored config."""
    agent = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    body = {
        "tools": [{"id": "calculator", "config": {}}],
        "name": None,
        "description": None,
        "instructions": None,
        "model": None,
        "temperature": None,
        "memory": None,
    }
    body = {**{k: v for k, v in body.items() if k not in KEEPER}, field: None}
    response = await agents.patch(f"{AGENTS}/{agent['id']}", json=body, headers=headers)
    assert response.status_code == 422, response.text
    assert problem(response) == "validation-error"
    assert response.json()["errors"][0]["loc"] == ["body", field]
    unchanged = await agents.get(f"{AGENTS}/{agent['id']}", headers=headers)
    assert unchanged.json()["version"] == 1 and unchanged.json()[field] == KEEPER[field]


async def test_patch_schema_says_those_fields_are_not_nullable(agents):
    document = (await agents.get("/openapi.json")).json()
    fields = document["components"]["schemas"]["AgentFields"]["properties"]
    for name in ("name", "instructions", "model"):
        assert fields[name]["type"] == "string" and "default" not in fields[name], fields[name]
    assert {"type": "null"} in fields["description"]["anyOf"]  # this one can be cleared


async def test_an_invalid_cursor_is_a_documented_400(agents, headers):
    response = await agents.get(AGENTS, params={"cursor": "0" * 100}, headers=headers)
    assert response.status_code == 400 and problem(response) == "invalid-cursor"
    document = (await agents.get("/openapi.json")).json()
    assert "400" in document["paths"][AGENTS]["get"]["responses"]

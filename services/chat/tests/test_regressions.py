"""Failures the schemathesis fuzz run (``tests/fuzz``) found, each as the request it sent."""

from __future__ import annotations

import uuid

import pytest

from agentmesh.shared.openapi import SSE_EVENT_SCHEMA


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("OPTIONS", "/v1/models", "GET"), ("OPTIONS", "/v1/chat/completions", "POST")],
)
async def test_a_method_the_openai_routes_do_not_serve_is_405_not_500(
    chat, token_issuer, method, path, allowed
):
    """Was a 500: the route's own 405 escaped the OpenAI error wrapper, which answered 500
    and re-raised into a response already started."""
    body = {"model": "0", "messages": [{"role": "tool"}], "stream": False, "n": 1}
    response = await chat.request(method, path, json=body, headers=token_issuer.headers())
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == allowed
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"] == f"{method} is not allowed on {path}"
    assert error["type"] == "invalid_request_error"


async def test_a_conversation_with_someone_elses_agent_is_a_documented_404(
    chat, make_agent, token_issuer
):
    agent = await make_agent(token_issuer.headers())
    response = await chat.post(
        "/api/v1/conversations", json={"agent_id": agent["id"]}, headers=token_issuer.headers()
    )
    assert response.status_code == 404, response.text
    document = (await chat.get("/openapi.json")).json()
    assert "404" in document["paths"]["/api/v1/conversations"]["post"]["responses"]


async def test_budgets_document_that_only_admins_may_change_them(chat, token_issuer):
    user_id = uuid.uuid4()
    headers = token_issuer.headers()
    put = await chat.put(f"/api/v1/budgets/{user_id}", json={"monthly_tokens": 10}, headers=headers)
    delete = await chat.delete(f"/api/v1/budgets/{user_id}", headers=headers)
    assert put.status_code == delete.status_code == 403
    operations = (await chat.get("/openapi.json")).json()["paths"]["/api/v1/budgets/{user_id}"]
    assert "403" in operations["put"]["responses"] and "403" in operations["delete"]["responses"]


async def test_streamed_turn_events_match_the_documented_event_schema(
    chat, make_agent, token_issuer
):
    """The stream was documented as ``{"type": "string"}``: in OpenAPI 3.1 a media type's
    schema describes each event, and an event is an object (event, data, id)."""
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (
        await chat.post("/api/v1/conversations", json={"agent_id": agent["id"]}, headers=headers)
    ).json()
    path = f"/api/v1/conversations/{conversation['id']}/messages"
    response = await chat.post(path, json={"content": "0", "stream": True}, headers=headers)
    assert response.status_code == 200, response.text
    events = [block for block in response.text.split("\n\n") if block.strip()]
    assert events
    fields = set(SSE_EVENT_SCHEMA["properties"])
    for block in events:
        names = {line.split(":", 1)[0] for line in block.splitlines() if not line.startswith(":")}
        assert names <= fields, block
    document = (await chat.get("/openapi.json")).json()
    for method, operation in [
        ("post", path.replace(conversation["id"], "{conversation_id}")),
        ("get", "/api/v1/runs/{run_id}/events"),
        ("post", "/v1/chat/completions"),
    ]:
        content = document["paths"][operation][method]["responses"]["200"]["content"]
        assert content["text/event-stream"]["schema"] == SSE_EVENT_SCHEMA, operation

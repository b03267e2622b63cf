"""/v1/responses: OpenAI's Responses API over agents, stored per workspace in Postgres."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from sqlalchemy import delete

from agentmesh.chat.models import Budget

RESPONSES = "/v1/responses"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def text_of(body: dict) -> str:
    return "".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )


async def test_create_echoes_params_and_stores_the_response(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, name="Keeper")
    response = await chat.post(
        RESPONSES,
        headers=headers,
        json={
            "model": "keeper",
            "input": "Hello there",
            "instructions": "Be brief.",
            "metadata": {"ticket": "42"},
            "temperature": 0.3,
            "max_output_tokens": 300,
            "include": [],
            "top_p": 1,
            "reasoning": {"effort": None},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("resp_") and body["object"] == "response"
    assert body["status"] == "completed" and body["error"] is None
    assert body["model"] == "keeper" and body["instructions"] == "Be brief."
    assert body["metadata"] == {"ticket": "42"} and body["temperature"] == 0.3
    assert body["max_output_tokens"] == 300 and body["previous_response_id"] is None
    assert body["tools"] == [] and body["tool_choice"] == "auto"
    [message] = body["output"]
    assert message["type"] == "message" and message["role"] == "assistant"
    assert message["id"].startswith("msg_") and message["status"] == "completed"
    assert message["content"][0]["type"] == "output_text"
    assert text_of(body).startswith('You said: "Hello there"')
    usage = body["usage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["output_tokens_details"] == {"reasoning_tokens": 0}
    # A run, with its usage, as for every run.
    run = await chat.get(f"/api/v1/runs/{response.headers['x-run-id']}", headers=headers)
    assert run.json()["output_tokens"] == usage["output_tokens"]

    got = await chat.get(f"{RESPONSES}/{body['id']}", headers=headers)
    assert got.status_code == 200 and got.json() == body
    items = (await chat.get(f"{RESPONSES}/{body['id']}/input_items", headers=headers)).json()
    assert items["object"] == "list" and items["has_more"] is False
    [item] = items["data"]
    assert item["type"] == "message" and item["role"] == "user"
    assert item["content"] == [{"type": "input_text", "text": "Hello there"}]
    by_id = await chat.post(RESPONSES, headers=headers, json={"model": agent["id"], "input": "x"})
    assert by_id.status_code == 200, by_id.text

    # Another workspace sees nothing; the same workspace's other member does.
    stranger = token_issuer.headers()
    error = error_of(await chat.get(f"{RESPONSES}/{body['id']}", headers=stranger), 404)
    assert error["type"] == "invalid_request_error"
    assert (await chat.delete(f"{RESPONSES}/{body['id']}", headers=stranger)).status_code == 404
    owner_id = uuid.UUID(body["id"][5:])
    del owner_id
    deleted = await chat.delete(f"{RESPONSES}/{body['id']}", headers=headers)
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert (await chat.get(f"{RESPONSES}/{body['id']}", headers=headers)).status_code == 404


async def test_workspace_members_share_responses(chat, make_agent, token_issuer):
    owner = uuid.uuid4()
    headers = token_issuer.headers(owner)
    await make_agent(headers, name="Keeper")
    body = (
        await chat.post(RESPONSES, headers=headers, json={"model": "keeper", "input": "hi"})
    ).json()
    member = token_issuer.headers(uuid.uuid4(), workspace_id=owner, workspace_role="viewer")
    assert (await chat.get(f"{RESPONSES}/{body['id']}", headers=member)).status_code == 200
    api_key = token_issuer.headers(owner, scopes=["agents:read"])
    assert error_of(await chat.get(f"{RESPONSES}/{body['id']}", headers=api_key), 403)


async def test_chaining_carries_items_not_instructions(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    first = (
        await chat.post(
            RESPONSES,
            headers=headers,
            json={"model": "keeper", "input": "My name is Ada", "instructions": "Say SECRET."},
        )
    ).json()
    second = await chat.post(
        RESPONSES,
        headers=headers,
        json={
            "model": "keeper",
            "input": [{"role": "user", "content": "And who am I?"}],
            "previous_response_id": first["id"],
        },
    )
    assert second.status_code == 200, second.text
    body = second.json()
    assert body["previous_response_id"] == first["id"] and body["instructions"] is None
    assert text_of(body).startswith('You said: "And who am I?"')
    # The model saw both turns (more input), the first's instructions gone.
    assert body["usage"]["input_tokens"] > first["usage"]["input_tokens"]

    error = error_of(
        await chat.post(
            RESPONSES,
            headers=headers,
            json={"model": "keeper", "input": "x", "previous_response_id": "resp_nope"},
        ),
        404,
    )
    assert error["param"] == "previous_response_id"
    unstored = (
        await chat.post(
            RESPONSES,
            headers=headers,
            json={"model": "keeper", "input": "forget me", "store": False},
        )
    ).json()
    assert unstored["status"] == "completed" and unstored["store"] is False
    assert (await chat.get(f"{RESPONSES}/{unstored['id']}", headers=headers)).status_code == 404
    error = error_of(
        await chat.post(
            RESPONSES,
            headers=headers,
            json={"model": "keeper", "input": "x", "previous_response_id": unstored["id"]},
        ),
        404,
    )
    assert error["param"] == "previous_response_id"


async def test_function_tools_round_trip(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    first = await chat.post(
        RESPONSES,
        headers=headers,
        json={"model": "keeper", "input": "Use get_weather for Lisbon", "tools": [WEATHER]},
    )
    assert first.status_code == 200, first.text
    body = first.json()
    [call] = body["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Use get_weather for Lisbon"}
    assert call["call_id"] and call["id"].startswith("fc_")
    answer = await chat.post(
        RESPONSES,
        headers=headers,
        json={
            "model": "keeper",
            "previous_response_id": body["id"],
            "tools": [WEATHER],
            "input": [
                {"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 24C"}
            ],
        },
    )
    assert answer.status_code == 200, answer.text
    assert "Sunny, 24C" in text_of(answer.json())
    wrong = await chat.post(
        RESPONSES,
        headers=headers,
        json={
            "model": "keeper",
            "previous_response_id": body["id"],
            "input": [{"type": "function_call_output", "call_id": "call_other", "output": "x"}],
        },
    )
    assert error_of(wrong, 400)["param"] == "input[0].call_id"
    # Without a previous response, the whole history in the input works too.
    replay = await chat.post(
        RESPONSES,
        headers=headers,
        json={
            "model": "keeper",
            "input": [
                {"role": "user", "content": "Use get_weather for Lisbon"},
                call,
                {"type": "function_call_output", "call_id": call["call_id"], "output": "Rain"},
            ],
        },
    )
    assert "Rain" in text_of(replay.json())


async def test_refusals_name_the_param(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    cases = [
        ({"frobnicate": 1}, "frobnicate"),
        ({"top_p": 0.5}, "top_p"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0].type",
        ),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"include": ["message.output_text.logprobs"]}, "include[0]"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name"),
    ]
    for extra, param in cases:
        body = {"model": "keeper", "input": "hi", **extra}
        error = error_of(await chat.post(RESPONSES, headers=headers, json=body), 400)
        assert error["param"] == param, (extra, error)
    missing = error_of(
        await chat.post(RESPONSES, headers=headers, json={"model": "nobody", "input": "hi"}), 404
    )
    assert missing["code"] == "model_not_found"


async def test_too_long_context_unless_truncation_auto(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Small", memory={"window_tokens": 256})
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "words " * 60}
        for i in range(6)
    ]
    error = error_of(
        await chat.post(RESPONSES, headers=headers, json={"model": "small", "input": turns}), 400
    )
    assert error["code"] == "context_length_exceeded" and error["param"] == "input"
    fitted = await chat.post(
        RESPONSES, headers=headers, json={"model": "small", "input": turns, "truncation": "auto"}
    )
    assert fitted.status_code == 200, fitted.text
    assert fitted.json()["truncation"] == "auto"


async def test_budget_spent_is_insufficient_quota(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, name="Keeper")
    async with chat.app.state.sessionmaker() as session, session.begin():
        owner = uuid.UUID(agent["owner_id"])  # in their personal workspace
        session.add(Budget(workspace_id=owner, user_id=owner, monthly_tokens=0))
    try:
        error = error_of(
            await chat.post(RESPONSES, headers=headers, json={"model": "keeper", "input": "hi"}),
            402,
        )
        assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    finally:
        async with chat.app.state.sessionmaker() as session, session.begin():
            await session.execute(
                delete(Budget).where(Budget.user_id == uuid.UUID(agent["owner_id"]))
            )


async def test_stream_events_in_order_with_gap_free_numbers(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    response = await chat.post(
        RESPONSES,
        headers=headers,
        json={"model": "keeper", "input": "Stream this please", "stream": True},
    )
    assert response.status_code == 200, response.text
    events = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: ")
    ]
    assert "[DONE]" not in response.text
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    types = [e["type"] for e in events]
    assert types[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = events[-1]["response"]
    assert final["status"] == "completed" and text_of(final) == deltas
    assert deltas.startswith('You said: "Stream this please"')
    stored = (await chat.get(f"{RESPONSES}/{final['id']}", headers=headers)).json()
    assert stored["output"] == final["output"]


async def test_user_erasure_deletes_their_responses(chat, make_agent, token_issuer, nats_url):
    import nats
    from sqlalchemy import func, select

    from agentmesh.chat.responses.tables import StoredResponse
    from agentmesh.shared.events.contracts import UserDeleted
    from agentmesh.shared.events.envelope import Envelope

    from .test_read_model_and_erasure import _erasures, eventually

    erased, kept = uuid.uuid4(), uuid.uuid4()
    for user_id in (erased, kept):
        headers = token_issuer.headers(user_id)
        await make_agent(headers, name="Keeper")
        made = await chat.post(RESPONSES, headers=headers, json={"model": "keeper", "input": "x"})
        assert made.status_code == 200, made.text

    async def count(user_id: uuid.UUID) -> int:
        async with chat.app.state.sessionmaker() as session:
            return await session.scalar(
                select(func.count())
                .select_from(StoredResponse)
                .where(StoredResponse.user_id == user_id)
            )

    assert await count(erased) == 1
    envelope = Envelope.wrap(
        UserDeleted(user_id=erased, requested_at=datetime.now(UTC)), source="identity"
    )
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(envelope.type, envelope.model_dump_json().encode())
    finally:
        await nc.close()

    async def erased_once() -> bool:
        return await _erasures(chat, erased) == 1

    await eventually(erased_once, timeout=30)
    assert await count(erased) == 0 and await count(kept) == 1

"""The OpenAI-compatible API (/v1): agents as models, stateless completions, streaming,
tool calls for the caller to run, and errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import delete

from agentmesh.chat.models import WHOLE_WORKSPACE, AgentSnapshot, Budget, new_id
from agentmesh.chat.openai_compat.completions import RunFailed, completion, completion_chunks
from agentmesh.chat.openai_compat.errors import from_problem
from agentmesh.chat.runs.executor import RunOutcome, RunPlan
from agentmesh.chat.runs.hub import RunHub
from agentmesh.shared.errors import problem_type

COMPLETIONS = "/v1/chat/completions"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def data_lines(body: str) -> list[str]:
    return [line[6:] for line in body.splitlines() if line.startswith("data: ")]


def assert_openai_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code
    return error


async def test_models_lists_own_agents_by_id_and_slug(chat, make_agent, token_issuer):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    keeper = await make_agent(owner, name="Keeper")
    librarian = await make_agent(owner, name="Librarian  Bot!")
    foreign = await make_agent(stranger, name="Keeper")
    response = await chat.get("/v1/models", headers=owner)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "list"
    ids = {model["id"] for model in body["data"]}
    assert ids == {keeper["id"], "keeper", librarian["id"], "librarian-bot"}
    assert foreign["id"] not in ids
    assert all(m["object"] == "model" and m["owned_by"] == "agentmesh" for m in body["data"])
    assert all(isinstance(m["created"], int) for m in body["data"])

    twin = await make_agent(owner, name="keeper")
    ids = {m["id"] for m in (await chat.get("/v1/models", headers=owner)).json()["data"]}
    suffixed = {f"keeper-{uuid.UUID(a['id']).hex[-8:]}" for a in (keeper, twin)}
    assert suffixed <= ids and "keeper" not in ids


async def test_completion_runs_the_agent_statelessly(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, name="Keeper")
    for model in ("keeper", agent["id"]):
        response = await chat.post(
            COMPLETIONS,
            headers=headers,
            json={
                "model": model,
                "temperature": 1.7,
                "seed": 7,  # unknown fields are ignored
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": "Hello there"}]},
                ],
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        run_id = uuid.UUID(response.headers["x-run-id"])
        assert body["id"] == f"chatcmpl-{run_id.hex}" and body["object"] == "chat.completion"
        assert body["model"] == model
        choice = body["choices"][0]
        assert choice["message"]["role"] == "assistant"
        assert choice["message"]["content"].startswith('You said: "Hello there"')
        assert choice["finish_reason"] == "stop"
        usage = body["usage"]
        assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        run = (await chat.get(f"/api/v1/runs/{run_id}", headers=headers)).json()
        assert run["status"] == "completed" and run["conversation_id"] is None
        assert run["output_tokens"] == usage["completion_tokens"]
    conversations = (await chat.get("/api/v1/conversations", headers=headers)).json()
    assert conversations["items"] == []


async def test_max_tokens_is_capped_by_the_agent(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Terse", max_output_tokens=5)
    question = {"role": "user", "content": "Tell me a long story about a lighthouse keeper"}
    response = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={"model": "terse", "max_tokens": 500, "messages": [question]},
    )
    assert response.status_code == 200, response.text
    assert 0 < response.json()["usage"]["completion_tokens"] <= 5
    response = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={"model": "terse", "max_completion_tokens": 2, "messages": [question]},
    )
    assert response.json()["usage"]["completion_tokens"] <= 2


async def test_stream_with_usage_ends_with_done(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    messages = [{"role": "user", "content": "Stream this please"}]
    plain = await chat.post(
        COMPLETIONS, headers=headers, json={"model": "keeper", "messages": messages}
    )
    response = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={
            "model": "keeper",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = data_lines(response.text)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    run_id = uuid.UUID(response.headers["x-run-id"])
    assert {c["id"] for c in chunks} == {f"chatcmpl-{run_id.hex}"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain.json()["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])

    response = await chat.post(
        COMPLETIONS, headers=headers, json={"model": "keeper", "messages": messages, "stream": True}
    )
    chunks = [json.loads(line) for line in data_lines(response.text)[:-1]]
    assert all("usage" not in c for c in chunks) and chunks[-1]["choices"][0]["finish_reason"]


async def test_caller_tools_come_back_as_openai_tool_calls(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper", tools=[{"id": "calculator"}])
    question = {"role": "user", "content": "Use get_weather for Paris"}
    response = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={"model": "keeper", "messages": [question], "tools": [WEATHER], "tool_choice": "auto"},
    )
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather"
    assert "Paris" in json.loads(call["function"]["arguments"])["city"]

    answered = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={
            "model": "keeper",
            "messages": [
                question,
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": call["id"], "content": "Sunny, 24C"},
            ],
            "tools": [WEATHER],
        },
    )
    assert answered.status_code == 200, answered.text
    final = answered.json()["choices"][0]
    assert final["finish_reason"] == "stop" and "Sunny, 24C" in final["message"]["content"]

    streamed = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={"model": "keeper", "messages": [question], "tools": [WEATHER], "stream": True},
    )
    chunks = [json.loads(line) for line in data_lines(streamed.text)[:-1]]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    (streamed_call,) = next(d["tool_calls"] for d in deltas if d.get("tool_calls"))
    assert streamed_call["index"] == 0 and streamed_call["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_tool_choice_reaches_the_model(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Chooser")
    plain = {"role": "user", "content": "What should I wear tomorrow?"}  # names no tool

    async def ask(choice, question=plain):
        return await chat.post(
            COMPLETIONS,
            headers=headers,
            json={
                "model": "chooser",
                "messages": [question],
                "tools": [WEATHER],
                "tool_choice": choice,
            },
        )

    forced = (await ask("required")).json()["choices"][0]
    assert forced["finish_reason"] == "tool_calls"
    assert forced["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    named = (await ask({"type": "function", "function": {"name": "get_weather"}})).json()
    assert named["choices"][0]["finish_reason"] == "tool_calls"
    auto = (await ask("auto")).json()["choices"][0]
    assert auto["finish_reason"] == "stop" and auto["message"]["tool_calls"] is None
    naming = {"role": "user", "content": "Use get_weather for Paris"}
    refused = (await ask("none", naming)).json()["choices"][0]
    assert refused["finish_reason"] == "stop" and refused["message"]["content"]
    assert_openai_error(await ask({"type": "function", "function": {"name": "nope"}}), 400)
    assert_openai_error(await ask("sometimes"), 400)


async def test_finish_reason_is_the_models_own(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Short")
    question = {"role": "user", "content": "Tell me everything about the sea and its tides"}
    cut = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={"model": "short", "messages": [question], "max_tokens": 3},
    )
    assert cut.json()["choices"][0]["finish_reason"] == "length"
    whole = await chat.post(
        COMPLETIONS, headers=headers, json={"model": "short", "messages": [question]}
    )
    assert whole.json()["choices"][0]["finish_reason"] == "stop"


async def test_errors_use_the_openai_shape(chat, make_agent, token_issuer):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    agent = await make_agent(owner, name="Keeper")
    hello = [{"role": "user", "content": "hi"}]
    for model in ("nobody", agent["id"]):
        response = await chat.post(
            COMPLETIONS, headers=stranger, json={"model": model, "messages": hello}
        )
        error = assert_openai_error(response, 404, "model_not_found")
        assert error["type"] == "invalid_request_error" and error["param"] == "model"
    error = assert_openai_error(
        await chat.post(COMPLETIONS, headers=owner, json={"model": "x"}), 400
    )
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    bad = {"model": "keeper", "messages": hello, "n": 2}
    assert_openai_error(await chat.post(COMPLETIONS, headers=owner, json=bad), 400)
    bad = {"model": "keeper", "messages": hello, "temperature": 3}
    assert_openai_error(await chat.post(COMPLETIONS, headers=owner, json=bad), 400)
    bad = {"model": "keeper", "messages": [{"role": "tool", "content": "x"}]}
    assert_openai_error(await chat.post(COMPLETIONS, headers=owner, json=bad), 400)
    broken = await chat.post(
        COMPLETIONS, headers={**owner, "content-type": "application/json"}, content=b"{not json"
    )
    assert_openai_error(broken, 400)
    for response in (
        await chat.get("/v1/models"),
        await chat.post(COMPLETIONS, json={"model": "keeper", "messages": hello}),
        await chat.get("/v1/models", headers={"Authorization": "Bearer nope"}),
    ):
        error = assert_openai_error(response, 401, "invalid_api_key")
    assert_openai_error(await chat.get("/v1/nowhere", headers=owner), 404)
    # Other routes keep problem+json.
    other = await chat.get("/api/v1/conversations/not-a-uuid", headers=owner)
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")


async def test_over_budget_is_402(chat, make_agent, token_issuer):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    await make_agent(headers, name="Keeper")
    async with chat.app.state.sessionmaker() as session, session.begin():
        session.add(Budget(workspace_id=user_id, user_id=user_id, monthly_tokens=0))
    try:
        response = await chat.post(
            COMPLETIONS,
            headers=headers,
            json={"model": "keeper", "messages": [{"role": "user", "content": "hi"}]},
        )
        error = assert_openai_error(response, 402, "budget_exceeded")
        assert error["type"] == "insufficient_quota"
    finally:
        async with chat.app.state.sessionmaker() as session, session.begin():
            await session.execute(delete(Budget).where(Budget.user_id == user_id))


async def test_a_model_by_id_is_that_live_agent_with_its_budget(
    chat, agents, make_agent, token_issuer
):
    """By id, the agent is read alone: the workspace's own budget applies to it (402), and
    once deleted it is no model (404, and gone from /v1/models)."""
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    agent = await make_agent(headers, name="Keeper")
    ask = {"model": agent["id"], "messages": [{"role": "user", "content": "hi"}]}
    async with chat.app.state.sessionmaker() as session, session.begin():
        session.add(Budget(workspace_id=user_id, user_id=WHOLE_WORKSPACE, monthly_tokens=0))
    try:
        response = await chat.post(COMPLETIONS, headers=headers, json=ask)
        assert_openai_error(response, 402, "budget_exceeded")
    finally:
        async with chat.app.state.sessionmaker() as session, session.begin():
            await session.execute(delete(Budget).where(Budget.workspace_id == user_id))
    response = await chat.post(COMPLETIONS, headers=headers, json=ask)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == agent["id"]

    deleted = await agents.delete(f"/api/v1/agents/{agent['id']}", headers=headers)
    assert deleted.status_code == 204
    for _ in range(400):
        async with chat.app.state.sessionmaker() as session:
            snapshot = await session.get(AgentSnapshot, uuid.UUID(agent["id"]))
        if snapshot is not None and snapshot.deleted:
            break
        await asyncio.sleep(0.05)
    assert snapshot is not None and snapshot.deleted
    response = await chat.post(COMPLETIONS, headers=headers, json=ask)
    assert_openai_error(response, 404, "model_not_found")
    models = (await chat.get("/v1/models", headers=headers)).json()["data"]
    assert agent["id"] not in {model["id"] for model in models}


async def test_a_failed_run_is_an_openai_error_streamed_or_not():
    problem = {
        "type": problem_type("model-call-failed"),
        "title": "Model call failed",
        "status": 502,
        "detail": "The provider is down.",
    }
    plan = RunPlan(
        run_id=new_id(),
        workspace_id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        agent_id=uuid.uuid4(),
        agent_version=1,
        config={},
        history=[],
    )
    outcome = RunOutcome(status="failed", content="Hel", error=problem)
    with pytest.raises(RunFailed) as failed:
        completion(plan, outcome, "keeper", 0)
    status, body = from_problem(failed.value.status, problem | {"type": failed.value.type})
    assert status == 502
    assert body["error"] == {
        "message": "The provider is down.",
        "type": "server_error",
        "param": None,
        "code": "model_call_failed",
    }

    hub = RunHub(broker=None)
    channel = hub.open(plan.run_id)

    async def run() -> RunOutcome:
        for kind, data in (
            ("run.started", {}),
            ("message.delta", {"delta": "Hel"}),
            ("run.failed", problem),
            ("done", {"status": "failed"}),
        ):
            await hub.emit(channel, kind, data)
        return outcome

    channel.task = asyncio.create_task(run())
    frames = [
        frame.data
        async for frame in completion_chunks(hub, channel, plan, "keeper", 0, include_usage=True)
    ]
    assert json.loads(frames[1])["choices"][0]["delta"] == {"content": "Hel"}
    assert json.loads(frames[-2])["error"]["code"] == "model_call_failed"
    assert frames[-1] == "[DONE]"

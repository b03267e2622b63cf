"""Every remote provider kind over real HTTP, against a local stand-in speaking its wire
format (Anthropic Messages SSE, Ollama NDJSON, Azure OpenAI's deployment path, Mistral):
a plain turn, a streamed turn, a tool call round trip, a rate-limit retry, the usage
recorded, and structured output on /v1/chat/completions in the provider's own form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentmesh.shared.testing.provider_servers import (
    FakeAnthropic,
    FakeAzureOpenAI,
    FakeMistral,
    FakeOllama,
)

from .test_conversations import CONV, parse_sse

COMPLETIONS = "/v1/chat/completions"
REPLY = "Hello from the stand-in"
API_VERSION = "2024-10-21"
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rain": {"type": "boolean"}},
    "required": ["city", "rain"],
    "additionalProperties": False,
}
STRUCTURED = {"city": "Lyon", "rain": False}
KINDS = ("anthropic", "ollama", "azure_openai", "mistral")


def _server(kind: str) -> Any:
    if kind == "anthropic":
        return FakeAnthropic(reply=REPLY, structured=STRUCTURED)
    if kind == "ollama":
        return FakeOllama(reply=REPLY, structured=STRUCTURED)
    if kind == "mistral":
        return FakeMistral(reply=REPLY, structured=STRUCTURED)
    # Azure answers like OpenAI (FakeOpenAI): the reply is the JSON when it is asked for.
    return FakeAzureOpenAI(reply=REPLY, models=("gpt-deploy",))


def _provider(kind: str, server: Any) -> dict[str, Any]:
    body = {"kind": kind, "name": f"local {kind}", "base_url": server.base_url}
    if kind == "azure_openai":
        return {**body, "api_key": server.azure_key, "api_version": API_VERSION}
    return {**body, "api_key": server.api_key} if server.api_key else body


def _bodies(server: Any) -> list[dict[str, Any]]:
    return [r.body for r in server.requests if isinstance(r.body, dict)]


def _attempts(server: Any) -> int:
    return server.deployment_attempts if isinstance(server, FakeAzureOpenAI) else server.attempts


@pytest.fixture(params=KINDS)
async def stand_in(request, agents, make_agent, token_issuer):
    """``(kind, server, headers, agent)``: an agent with the current_time tool on a
    provider of ``kind``, pointed at its stand-in."""
    kind = request.param
    async with _server(kind) as server:
        headers = token_issuer.headers()
        created = await agents.post(
            "/api/v1/providers", headers=headers, json=_provider(kind, server)
        )
        assert created.status_code == 201, created.text
        assert created.json()["kind"] == kind
        model = "gpt-deploy" if kind == "azure_openai" else "stand-in-model"
        agent = await make_agent(
            headers, provider_id=created.json()["id"], model=model, tools=[{"id": "current_time"}]
        )
        agent["provider_id"] = created.json()["id"]
        yield kind, server, headers, agent


async def _conversation(chat, headers: dict, agent: dict) -> str:
    # Titled: no title request is made beside the turns.
    created = await chat.post(CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers)
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def test_plain_and_streamed_turns_record_the_usage(chat, stand_in):
    kind, server, headers, agent = stand_in
    url = f"{CONV}/{await _conversation(chat, headers, agent)}/messages"
    plain = await chat.post(url, headers=headers, json={"content": "hi"})
    assert plain.status_code == 200, plain.text
    assert plain.json()["content"] == REPLY
    run = (await chat.get(f"/api/v1/runs/{plain.headers['X-Run-Id']}", headers=headers)).json()
    assert run["provider"] == kind and run["status"] == "completed"
    assert run["input_tokens"] > 0 and run["output_tokens"] > 0
    streamed = await chat.post(url, headers=headers, json={"content": "again", "stream": True})
    events = parse_sse(streamed.text)
    deltas = [e["data"]["delta"] for e in events if e["event"] == "message.delta"]
    assert len(deltas) > 1 and "".join(deltas) == REPLY  # token by token, not at once
    completed = next(e for e in events if e["event"] == "message.completed")
    assert completed["data"]["usage"]["input_tokens"] > 0
    assert completed["data"]["usage"]["output_tokens"] > 0
    assert all(r.authorized for r in server.requests)
    if kind == "azure_openai":  # the deployment's path, the API version, the api-key header
        assert {r.path for r in server.requests} == {
            "/openai/deployments/gpt-deploy/chat/completions"
        }
        assert all(q == {"api-version": API_VERSION} for q in server.queries)
    else:
        assert all(body["model"] == "stand-in-model" for body in _bodies(server))


async def test_a_tool_call_round_trip(chat, stand_in):
    _kind, server, headers, agent = stand_in
    url = f"{CONV}/{await _conversation(chat, headers, agent)}/messages"
    response = await chat.post(
        url, headers=headers, json={"content": "call current_time", "stream": True}
    )
    events = parse_sse(response.text)
    call = next(e["data"] for e in events if e["event"] == "tool.call")
    result = next(e["data"] for e in events if e["event"] == "tool.result")
    assert call["name"] == "current_time" and result["id"] == call["id"]
    completed = next(e["data"] for e in events if e["event"] == "message.completed")
    assert completed["content"] == f"The tool returned: {result['result']}"
    assert result["result"][:2] == "20"  # an ISO date: the tool really ran
    second = _bodies(server)[-1]  # the tool's result went back in the provider's own form
    assert result["result"] in json.dumps(second["messages"])
    assert second.get("tools"), "the tools are sent again with the result"


async def test_a_rate_limited_call_is_retried(chat, stand_in):
    _kind, server, headers, agent = stand_in
    url = f"{CONV}/{await _conversation(chat, headers, agent)}/messages"
    before = _attempts(server)
    server.fail_next("429")
    retried = await chat.post(url, headers=headers, json={"content": "hi"})
    assert retried.status_code == 200, retried.text
    assert retried.json()["content"] == REPLY and _attempts(server) == before + 2
    server.fail_next("429", times=10)
    failed = await chat.post(url, headers=headers, json={"content": "hi"})
    assert failed.status_code == 503, failed.text  # every attempt refused: a clean problem
    assert failed.headers["content-type"] == "application/problem+json"
    assert failed.json()["type"].endswith("model-rate-limited")


@pytest.mark.parametrize("stream", [False, True])
async def test_structured_output_reaches_the_provider_in_its_own_form(
    chat, make_agent, stand_in, stream
):
    kind, server, headers, with_tools = stand_in
    agent = await make_agent(
        headers, name="Plain", provider_id=with_tools["provider_id"], model=with_tools["model"]
    )
    if isinstance(server, FakeAzureOpenAI):
        server.reply = json.dumps(STRUCTURED)  # as OpenAI answers under the format
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    }
    body = {
        "model": agent["id"],
        "messages": [{"role": "user", "content": "Weather?"}],
        "response_format": response_format,
        "stream": stream,
    }
    response = await chat.post(COMPLETIONS, headers=headers, json=body)
    assert response.status_code == 200, response.text
    if stream:
        chunks = [
            json.loads(line[6:])
            for line in response.text.splitlines()
            if line.startswith("data: {")
        ]
        content = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1]
    else:
        choice = response.json()["choices"][0]
        content, finish = choice["message"]["content"], choice["finish_reason"]
        assert choice["message"]["tool_calls"] is None
    assert json.loads(content) == STRUCTURED and finish == "stop"
    sent = _bodies(server)[-1]
    if kind == "anthropic":  # a tool of the schema, which the model must call
        assert sent["tool_choice"] == {"type": "tool", "name": "weather"}
        tool = next(t for t in sent["tools"] if t["name"] == "weather")
        assert tool["input_schema"] == SCHEMA and "response_format" not in sent
    elif kind == "ollama":
        assert sent["format"] == SCHEMA and "response_format" not in sent
    else:
        assert sent["response_format"] == response_format


async def test_json_object_reaches_the_provider_in_its_own_form(chat, stand_in):
    kind, server, headers, agent = stand_in
    if isinstance(server, FakeAzureOpenAI):
        server.reply = json.dumps(STRUCTURED)
    body = {
        "model": agent["id"],
        "messages": [{"role": "user", "content": "Weather?"}],
        "response_format": {"type": "json_object"},
    }
    response = await chat.post(COMPLETIONS, headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert json.loads(response.json()["choices"][0]["message"]["content"]) == STRUCTURED
    sent = _bodies(server)[-1]
    if kind == "anthropic":  # beside the agent's own tool, the model must call one of them
        assert sent["tool_choice"] == {"type": "any"}
        assert [t["name"] for t in sent["tools"]] == ["current_time", "json_answer"]
        assert sent["tools"][-1]["input_schema"]["type"] == "object"
    elif kind == "ollama":
        assert sent["format"] == "json"
    else:
        assert sent["response_format"] == {"type": "json_object"}


async def test_anthropic_structured_output_after_the_agents_own_tool(
    chat, agents, make_agent, token_issuer
):
    """With the agent's tools, Anthropic must call some tool: it runs current_time, then
    answers through the format's tool, whose arguments are the answer."""
    async with FakeAnthropic(reply=REPLY, structured=STRUCTURED) as server:
        headers = token_issuer.headers()
        created = await agents.post(
            "/api/v1/providers", headers=headers, json=_provider("anthropic", server)
        )
        agent = await make_agent(
            headers,
            provider_id=created.json()["id"],
            model="claude-x",
            tools=[{"id": "current_time"}],
        )
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "weather", "schema": SCHEMA},
        }
        body = {
            "model": agent["id"],
            "response_format": response_format,
            "messages": [{"role": "user", "content": "call current_time"}],
        }
        response = await chat.post(COMPLETIONS, headers=headers, json=body)
        assert response.status_code == 200, response.text
        assert json.loads(response.json()["choices"][0]["message"]["content"]) == STRUCTURED
        first, second = _bodies(server)
        assert first["tool_choice"] == second["tool_choice"] == {"type": "any"}
        assert "tool_result" in json.dumps(second["messages"])  # current_time ran between


async def test_anthropics_answer_tool_is_the_answer_when_invoked() -> None:
    """``ainvoke`` of a structured Anthropic model (over HTTP, the Messages API stand-in)
    and ``invoke`` (the same conversion on a message) give the tool's arguments as text."""
    from langchain_core.language_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage, HumanMessage

    from agentmesh.chat.llm.resolve import resolve_chat_model
    from agentmesh.chat.llm.structured import with_response_format
    from agentmesh.shared.outbound import OutboundPolicy

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    response_format = {"type": "json_schema", "json_schema": {"name": "count", "schema": schema}}
    async with FakeAnthropic(structured={"n": 3}) as server:
        model = resolve_chat_model(
            provider_kind="anthropic",
            model="claude-x",
            base_url=server.base_url,
            api_key=server.api_key,
            policy=OutboundPolicy(allow_private=True),
        )
        reply = await with_response_format(model, "anthropic", response_format).ainvoke(
            [HumanMessage("How many?")]
        )
        assert json.loads(reply.content) == {"n": 3} and not reply.tool_calls
        assert reply.response_metadata["stop_reason"] == "end_turn"
        assert server.requests[-1].body["tool_choice"] == {"type": "tool", "name": "count"}
    answered = AIMessage(
        "",
        tool_calls=[{"name": "count", "args": {"n": 4}, "id": "toolu_1"}],
        response_metadata={"stop_reason": "tool_use"},
    )
    fake = FakeMessagesListChatModel(responses=[answered, AIMessage("plain")])
    structured = with_response_format(fake, "anthropic", response_format)
    reply = structured.invoke([HumanMessage("How many?")])
    assert json.loads(reply.content) == {"n": 4} and not reply.tool_calls
    assert reply.response_metadata["stop_reason"] == "end_turn"
    assert structured.invoke([HumanMessage("again")]).content == "plain"

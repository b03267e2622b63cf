"""/v1/chat/completions' lean path: an agent on an OpenAI-compatible provider with no
tools or knowledge streams the provider's chunks without LangChain, and keeps every
property of a run: the run's row and usage, retries, errors in OpenAI's shape."""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from agentmesh.chat.openai_compat import passthrough
from agentmesh.chat.runs.executor import RunPlan
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .test_conversations import CONV, parse_sse
from .test_openai_compat import COMPLETIONS, WEATHER, assert_openai_error, data_lines

REPLY = " ".join(f"word{i}" for i in range(12))


@pytest.fixture
async def fake_llm():
    async with FakeOpenAI(reply=REPLY) as server:
        yield server


@pytest.fixture
async def lean_agent(agents, make_agent, token_issuer, fake_llm):
    headers = token_issuer.headers()
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "local",
            "base_url": fake_llm.base_url,
            "api_key": fake_llm.api_key,
        },
    )
    assert provider.status_code == 201, provider.text
    agent = await make_agent(
        headers,
        provider_id=provider.json()["id"],
        model="fake-model",
        instructions="Be brief.",
        max_output_tokens=50,
    )
    return headers, agent


def plan(**overrides) -> RunPlan:
    fields = {
        "run_id": uuid.uuid4(),
        "workspace_id": uuid.uuid4(),
        "user_id": uuid.uuid4(),
        "agent_id": uuid.uuid4(),
        "agent_version": 1,
        "config": {"provider_id": str(uuid.uuid4()), "model": "m"},
        "history": [HumanMessage("hi"), AIMessage("hello"), HumanMessage("and?")],
    }
    return RunPlan(**(fields | overrides))


def test_only_the_plain_case_takes_the_lean_path():
    assert passthrough.applies(plan())
    config = {"provider_id": str(uuid.uuid4()), "model": "m"}
    assert not passthrough.applies(plan(config={"model": "offline"}))
    assert not passthrough.applies(plan(config=config | {"tools": [{"id": "calculator"}]}))
    assert not passthrough.applies(plan(config=config | {"knowledge_base_ids": ["k"]}))
    assert not passthrough.applies(plan(config=config | {"fallbacks": [{"model": "other"}]}))
    assert not passthrough.applies(plan(client_tools=[WEATHER]))
    assert not passthrough.applies(plan(response_format={"type": "json_object"}))
    turn = {"conversation_id": uuid.uuid4(), "parent_id": uuid.uuid4()}
    assert passthrough.applies(plan(**turn))  # a conversation's turn too
    assert not passthrough.applies(plan(**turn, title_seed="hi"))  # named by LangChain's model
    summarized = config | {"memory": {"summarize": True}}
    assert not passthrough.applies(plan(**turn, config=summarized))
    calls = [{"id": "c1", "name": "get_weather", "args": {}}]
    assert not passthrough.applies(
        plan(history=[AIMessage("", tool_calls=calls), ToolMessage("sunny", tool_call_id="c1")])
    )


async def test_a_streamed_completion_sends_what_langchain_sent_and_records_the_run(
    chat, lean_agent, fake_llm
):
    headers, agent = lean_agent
    response = await chat.post(
        COMPLETIONS,
        headers=headers,
        json={
            "model": agent["id"],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": 0.5,
            "messages": [
                {"role": "system", "content": "In English."},
                {"role": "user", "content": "hi"},
            ],
        },
    )
    assert response.status_code == 200, response.text
    lines = data_lines(response.text)
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == REPLY
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    sent = fake_llm.requests[-1]
    assert sent.authorized
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["temperature"] == 0.5 and sent.body["max_completion_tokens"] == 50
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nIn English."},
        {"role": "user", "content": "hi"},
    ]
    run = (await chat.get(f"/api/v1/runs/{response.headers['x-run-id']}", headers=headers)).json()
    assert run["status"] == "completed" and run["provider"] == "openai"
    assert run["output_tokens"] == usage["completion_tokens"]
    assert run["input_tokens"] == usage["prompt_tokens"] and run["ttft_ms"] is not None


async def test_a_conversations_turns_stream_and_are_kept(chat, lean_agent, fake_llm):
    headers, agent = lean_agent
    body = {"agent_id": agent["id"], "title": "Named"}  # no title to generate
    conversation = (await chat.post(CONV, json=body, headers=headers)).json()
    url = f"{CONV}/{conversation['id']}/messages"
    for question in ("hi", "and then?"):
        response = await chat.post(url, json={"content": question, "stream": True}, headers=headers)
        assert response.status_code == 200, response.text
        events = parse_sse(response.text)
        kinds = [e["event"] for e in events]
        assert kinds[0] == "run.started" and kinds[-2:] == ["message.completed", "done"]
        text = "".join(e["data"]["delta"] for e in events if e["event"] == "message.delta")
        assert text == REPLY
        completed = events[-2]["data"]
        assert completed["content"] == REPLY and completed["provider"] == "openai"
        assert completed["usage"]["output_tokens"] > 0
    assert fake_llm.requests[-1].body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": REPLY},
        {"role": "user", "content": "and then?"},
    ]
    history = (await chat.get(url, headers=headers)).json()["items"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "hi"),
        ("assistant", REPLY),
        ("user", "and then?"),
        ("assistant", REPLY),
    ]
    assert history[-1]["id"] == completed["message_id"]
    assert history[-1]["parent_id"] == history[-2]["id"]
    run = (await chat.get(f"/api/v1/runs/{response.headers['x-run-id']}", headers=headers)).json()
    assert run["status"] == "completed" and run["conversation_id"] == conversation["id"]


async def test_runs_one_after_another_reuse_the_providers_connection(chat, lean_agent, fake_llm):
    """A stream read to ``[DONE]`` only leaves the end of its body unread, which closes
    the connection: each run would connect again before its first token."""
    headers, agent = lean_agent
    body = {"model": agent["id"], "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        response = await chat.post(COMPLETIONS, headers=headers, json=body)
        assert data_lines(response.text)[-1] == "[DONE]"
    assert fake_llm.chat_attempts == 3
    assert len(fake_llm.peers) == 1


async def test_a_rate_limit_is_retried_before_the_first_token(chat, lean_agent, fake_llm):
    headers, agent = lean_agent
    fake_llm.fail_next("429")
    body = {"model": agent["id"], "messages": [{"role": "user", "content": "hi"}]}
    response = await chat.post(COMPLETIONS, headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    assert fake_llm.chat_attempts == 2


async def test_provider_failures_are_openai_errors(chat, lean_agent, fake_llm):
    headers, agent = lean_agent
    body = {"model": agent["id"], "messages": [{"role": "user", "content": "hi"}]}
    fake_llm.fail_next("500", times=5)
    failed = await chat.post(COMPLETIONS, headers=headers, json=body)
    assert_openai_error(failed, 502, "model_unavailable")
    assert fake_llm.api_key not in failed.text and "Traceback" not in failed.text

    fake_llm.fail_next("error_after_tokens")
    broken = await chat.post(COMPLETIONS, headers=headers, json=body | {"stream": True})
    lines = data_lines(broken.text)
    assert lines[-1] == "[DONE]"
    assert json.loads(lines[-2])["error"]["code"] == "model_stream_interrupted"
    run = (await chat.get(f"/api/v1/runs/{broken.headers['x-run-id']}", headers=headers)).json()
    assert run["status"] == "failed" and run["error"]["type"].endswith("model-stream-interrupted")

    fake_llm.fail_next("malformed")
    malformed = await chat.post(COMPLETIONS, headers=headers, json=body | {"stream": True})
    assert json.loads(data_lines(malformed.text)[-2])["error"]["code"] in (
        "model_bad_response",
        "model_stream_interrupted",
    )


async def test_a_wrong_key_is_an_auth_failure_without_the_providers_text(
    chat, agents, make_agent, token_issuer, fake_llm
):
    headers = token_issuer.headers()
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={
            "kind": "openai",
            "name": "bad",
            "base_url": fake_llm.base_url,
            "api_key": "sk-wrong-key-123456",
        },
    )
    agent = await make_agent(headers, provider_id=provider.json()["id"], model="fake-model")
    body = {"model": agent["id"], "messages": [{"role": "user", "content": "hi"}]}
    response = await chat.post(COMPLETIONS, headers=headers, json=body)
    assert_openai_error(response, 502, "model_auth_failed")
    assert "sk-wrong-key" not in response.text


async def test_the_lean_run_is_traced_when_an_exporter_is_set(common, lean_agent):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentmesh.chat.app import create_app as create_chat
    from agentmesh.shared.testing.fixtures import serve_app

    from .conftest import chat_settings

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    headers, agent = lean_agent
    app = create_chat(chat_settings(common), tracer_provider=provider)
    body = {"model": agent["id"], "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with serve_app(app) as url, aiohttp.ClientSession() as session:  # not instrumented
        response = await session.post(f"{url}{COMPLETIONS}", json=body, headers=headers)
        assert response.status == 200 and b"[DONE]" in await response.read()
        run_id = response.headers["x-run-id"]
    spans = exporter.get_finished_spans()
    (run,) = [s for s in spans if (s.attributes or {}).get("agentmesh.run_id") == run_id]
    assert run.name.startswith("invoke_agent ") and run.parent is not None
    rpc = [s for s in spans if s.name == "agents.rpc.provider.credentials publish"]
    assert rpc and rpc[0].parent.span_id == run.context.span_id


async def test_a_provider_gone_ends_the_stream_with_an_error(chat, agents, lean_agent, fake_llm):
    # The credentials are read inside the run: a provider deleted since the agent was saved
    # used to end the run's task without a last event, and a streaming client waited on
    # heartbeats.
    headers, agent = lean_agent
    deleted = await agents.delete(f"/api/v1/providers/{agent['provider_id']}", headers=headers)
    assert deleted.status_code == 204, deleted.text
    body = {"model": agent["id"], "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    response = await asyncio.wait_for(chat.post(COMPLETIONS, headers=headers, json=body), 60)
    lines = data_lines(response.text)
    assert lines[-1] == "[DONE]"
    assert json.loads(lines[-2])["error"]["code"] == "provider_unavailable"
    run = (await chat.get(f"/api/v1/runs/{response.headers['x-run-id']}", headers=headers)).json()
    assert run["status"] == "failed" and run["error"]["type"].endswith("provider-unavailable")
    assert fake_llm.chat_attempts == 0

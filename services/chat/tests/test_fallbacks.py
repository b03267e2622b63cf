"""Fallback models: an agent's model that fails before answering hands the run to the
next of its ``fallbacks``; the run, its events and the /v1 APIs say which one answered,
and the run is priced by it. Every provider here is a local HTTP server."""

from __future__ import annotations

import collections
import json
from decimal import Decimal

import pytest
from aiohttp import web

from agentmesh.chat.app import create_app as create_chat
from agentmesh.chat.settings import Price
from agentmesh.shared.local.ports import free_port
from agentmesh.shared.testing.fixtures import app_client
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .conftest import chat_settings
from .test_conversations import CONV, parse_sse

REPLY = "The backup model answers."
#: USD per million tokens: the agent's own model is dear, its fallback cheap.
PRICES = {
    "offline": Price(),
    "primary-model": Price(input=Decimal("100"), output=Decimal("300")),
    "backup-model": Price(input=Decimal("1"), output=Decimal("3")),
}
ATTEMPTS = 2  # CHAT_MODEL_ATTEMPTS here: each model is retried once before the next


class Failing:
    """A provider that answers every chat completion with ``status`` (OpenAI's error body)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.attempts: collections.Counter[str] = collections.Counter()
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts[body.get("model")] += 1
        error = {"message": "Service unavailable", "type": "server_error", "code": None}
        return web.json_response({"error": error}, status=self.status)

    async def __aenter__(self) -> Failing:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def chat(common, agents):
    """This module's chat app: two attempts per model, and prices per model."""
    app = create_chat(chat_settings(common, model_attempts=ATTEMPTS, prices=PRICES))
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
async def down():
    async with Failing(503) as server:
        yield server


@pytest.fixture
async def backup():
    async with FakeOpenAI(reply=REPLY) as server:
        yield server


async def provider(agents, headers: dict, base_url: str, api_key: str = "test-key") -> str:
    created = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={"kind": "openai", "name": "p", "base_url": base_url, "api_key": api_key},
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


async def agent_on(
    agents, make_agent, headers: dict, primary_url: str, backup: FakeOpenAI, **config
) -> dict:
    """An agent on ``primary-model`` at ``primary_url``, falling back to ``backup-model``."""
    primary = await provider(agents, headers, primary_url)
    spare = await provider(agents, headers, backup.base_url, backup.api_key or "")
    fallbacks = config.pop("fallbacks", [{"provider_id": spare, "model": "backup-model"}])
    return await make_agent(
        headers,
        name="Keeper",
        provider_id=primary,
        model="primary-model",
        fallbacks=fallbacks,
        **config,
    )


async def ask(chat, headers: dict, agent: dict, *, stream: bool = False):
    # Titled: no title request adds a model call to those counted.
    conversation = await chat.post(
        CONV, json={"agent_id": agent["id"], "title": "t"}, headers=headers
    )
    return await chat.post(
        f"{CONV}/{conversation.json()['id']}/messages",
        headers=headers,
        json={"content": "hello", "stream": stream},
    )


async def run_of(chat, headers: dict, response) -> dict:
    run = await chat.get(f"/api/v1/runs/{response.headers['X-Run-Id']}", headers=headers)
    assert run.status_code == 200, run.text
    return run.json()


def cost(price: Price, run: dict) -> Decimal:
    spent = price.input * run["input_tokens"] + price.output * run["output_tokens"]
    return (spent / Decimal(1_000_000)).quantize(Decimal("0.000001"))


async def test_primary_503_the_fallback_answers_and_the_run_says_so(
    chat, agents, make_agent, token_issuer, down, backup
):
    headers = token_issuer.headers()
    agent = await agent_on(agents, make_agent, headers, down.base_url, backup)
    response = await ask(chat, headers, agent, stream=True)
    events = parse_sse(response.text)
    assert "".join(e["data"]["delta"] for e in events if e["event"] == "message.delta") == REPLY
    completed = next(e["data"] for e in events if e["event"] == "message.completed")
    assert (completed["model"], completed["provider"], completed["fallback_index"]) == (
        "backup-model",
        "openai",
        0,
    )
    assert down.attempts == {"primary-model": ATTEMPTS}  # its retries first, then the next
    assert [r.body["model"] for r in backup.requests] == ["backup-model"]
    run = await run_of(chat, headers, response)
    assert run["status"] == "completed" and run["error"] is None
    assert (run["model"], run["provider"], run["fallback_index"]) == ("backup-model", "openai", 0)
    # Replayed from the run's row on another path: the end says the same.
    replay = await chat.get(f"/api/v1/runs/{run['id']}/events", headers=headers)
    replayed = next(e["data"] for e in parse_sse(replay.text) if e["event"] == "message.completed")
    assert replayed["model"] == "backup-model" and replayed["fallback_index"] == 0


async def test_usage_is_priced_by_the_model_that_answered(
    chat, agents, make_agent, token_issuer, backup
):
    headers = token_issuer.headers()
    # The agent's own model on the same server as its fallback: no provider_id needed.
    agent = await agent_on(
        agents, make_agent, headers, backup.base_url, backup, fallbacks=[{"model": "backup-model"}]
    )
    own = await run_of(chat, headers, await ask(chat, headers, agent))
    assert own["model"] == "primary-model" and own["fallback_index"] is None
    assert Decimal(own["cost_usd"]) == cost(PRICES["primary-model"], own) > 0
    backup.fail_next("429", times=ATTEMPTS)  # a rate limit on the agent's own model
    fell_back = await run_of(chat, headers, await ask(chat, headers, agent))
    assert fell_back["model"] == "backup-model" and fell_back["fallback_index"] == 0
    assert fell_back["output_tokens"] == own["output_tokens"] > 0
    assert Decimal(fell_back["cost_usd"]) == cost(PRICES["backup-model"], fell_back)
    assert Decimal(fell_back["cost_usd"]) < Decimal(own["cost_usd"])
    models = [r.body["model"] for r in backup.requests]
    assert models == ["primary-model", *["primary-model"] * ATTEMPTS, "backup-model"]


async def test_a_refused_connection_falls_back(chat, agents, make_agent, token_issuer, backup):
    headers = token_issuer.headers()
    nobody = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    agent = await agent_on(agents, make_agent, headers, nobody, backup)
    response = await ask(chat, headers, agent)
    assert response.status_code == 200, response.text
    assert response.json()["content"] == REPLY
    run = await run_of(chat, headers, response)
    assert run["model"] == "backup-model" and run["fallback_index"] == 0


async def test_a_failure_after_the_first_token_does_not_fall_back(
    chat, agents, make_agent, token_issuer, backup
):
    headers = token_issuer.headers()
    async with FakeOpenAI(reply="one two three four five") as primary:
        agent = await agent_on(agents, make_agent, headers, primary.base_url, backup)
        primary.fail_next("error_after_tokens")
        response = await ask(chat, headers, agent, stream=True)
    events = parse_sse(response.text)
    assert [e["event"] for e in events][-2:] == ["run.failed", "done"]
    assert any(e["event"] == "message.delta" for e in events)
    failed = next(e["data"] for e in events if e["event"] == "run.failed")
    assert failed["type"].endswith("/model-stream-interrupted")
    assert backup.chat_attempts == 0 and primary.chat_attempts == 1
    run = await run_of(chat, headers, response)
    assert run["status"] == "failed" and run["model"] == "primary-model"
    assert run["fallback_index"] is None


async def test_when_every_model_fails_the_run_fails_with_the_last_error(
    chat, agents, make_agent, token_issuer, down, backup
):
    headers = token_issuer.headers()
    async with Failing(429) as limited:
        spare = await provider(agents, headers, limited.base_url)
        fallbacks = [
            {"provider_id": spare, "model": "backup-model"},
            {"provider_id": spare, "model": "last-model"},
        ]
        agent = await agent_on(
            agents, make_agent, headers, down.base_url, backup, fallbacks=fallbacks
        )
        response = await ask(chat, headers, agent)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/model-rate-limited")  # the last one's, not a 503
    assert down.attempts == {"primary-model": ATTEMPTS}
    assert limited.attempts == {"backup-model": ATTEMPTS, "last-model": ATTEMPTS}
    run = await run_of(chat, headers, response)
    assert run["status"] == "failed" and run["error"]["type"].endswith("/model-rate-limited")
    assert (run["model"], run["fallback_index"]) == ("last-model", 1)
    assert Decimal(run["cost_usd"]) == 0


async def test_errors_retrying_cannot_fix_do_not_fall_back(
    chat, agents, make_agent, token_issuer, backup
):
    headers = token_issuer.headers()
    async with FakeOpenAI(api_key="the-right-key") as primary:  # the agent has another key
        agent = await agent_on(agents, make_agent, headers, primary.base_url, backup)
        response = await ask(chat, headers, agent)
    assert response.status_code == 502, response.text
    assert response.json()["type"].endswith("/model-auth-failed")
    assert primary.chat_attempts == 1 and backup.chat_attempts == 0


async def test_a_fallback_keeps_answering_the_rest_of_the_run(
    chat, agents, make_agent, token_issuer, down
):
    """After a tool call the next step goes to the model that answered, not back to the
    agent's own (which would be retried, and fail, once per step)."""
    headers = token_issuer.headers()
    call = {"name": "calculator", "arguments": {"expression": "6*7"}}
    async with FakeOpenAI(tool_call=call) as spare:
        agent = await agent_on(
            agents, make_agent, headers, down.base_url, spare, tools=[{"id": "calculator"}]
        )
        response = await ask(chat, headers, agent)
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["tool_calls"][0]["result"] == "42"
    assert message["content"] == "The tool returned: 42"
    assert down.attempts == {"primary-model": ATTEMPTS}
    assert [r.body["model"] for r in spare.requests] == ["backup-model", "backup-model"]


async def test_a_fallback_whose_provider_is_gone_is_skipped(
    chat, agents, make_agent, token_issuer, down, backup
):
    headers = token_issuer.headers()
    gone = await provider(agents, headers, backup.base_url)
    spare = await provider(agents, headers, backup.base_url, backup.api_key or "")
    agent = await agent_on(
        agents,
        make_agent,
        headers,
        down.base_url,
        backup,
        fallbacks=[
            {"provider_id": gone, "model": "gone-model"},
            {"provider_id": spare, "model": "backup-model"},
        ],
    )
    deleted = await agents.delete(f"/api/v1/providers/{gone}", headers=headers)
    assert deleted.status_code == 204
    run = await run_of(chat, headers, await ask(chat, headers, agent))
    assert run["status"] == "completed"
    assert (run["model"], run["fallback_index"]) == ("backup-model", 1)
    assert [r.body["model"] for r in backup.requests] == ["backup-model"]


async def test_openai_apis_use_the_fallbacks_and_report_the_model_that_answered(
    chat, agents, make_agent, token_issuer, down, backup
):
    headers = token_issuer.headers()
    await agent_on(agents, make_agent, headers, down.base_url, backup)
    served = {"model": "backup-model", "provider": "openai", "fallback_index": 0}
    question = {"role": "user", "content": "hello"}
    plain = await chat.post(
        "/v1/chat/completions", headers=headers, json={"model": "keeper", "messages": [question]}
    )
    assert plain.status_code == 200, plain.text
    body = plain.json()
    assert body["model"] == "keeper" and body["served_by"] == served
    assert body["choices"][0]["message"]["content"] == REPLY
    streamed = await chat.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": "keeper", "messages": [question], "stream": True},
    )
    chunks = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")
    ]
    [last] = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert last["served_by"] == served and chunks[0]["model"] == "keeper"
    response = await chat.post(
        "/v1/responses", headers=headers, json={"model": "keeper", "input": "hello"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["served_by"] == served and response.json()["model"] == "keeper"
    stored = await chat.get(f"/v1/responses/{response.json()['id']}", headers=headers)
    assert stored.json()["served_by"] == served
    assert down.attempts == {"primary-model": 3 * ATTEMPTS}


async def test_a_timeout_falls_back(common, agents, make_agent, token_issuer, backup):
    headers = token_issuer.headers()
    async with FakeOpenAI(timeout_seconds=60) as slow:  # holds the request, answers nothing
        agent = await agent_on(agents, make_agent, headers, slow.base_url, backup)
        slow.fail_next("timeout")
        settings = chat_settings(common, model_attempts=1, model_timeout_seconds=2)
        async with app_client(create_chat(settings)) as impatient:
            response = await ask(impatient, headers, agent)
            assert response.status_code == 200, response.text
            run = await run_of(impatient, headers, response)
    assert slow.chat_attempts == 1 and response.json()["content"] == REPLY
    assert (run["model"], run["fallback_index"]) == ("backup-model", 0)

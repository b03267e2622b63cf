"""Instructions templates and few-shot examples, through HTTP: what the model is sent.

A local OpenAI stand-in records every request; the identity service answers the profile
RPC for ``{{user.*}}`` and ``{{workspace.*}}``."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agentmesh.chat.llm.tokens import count_message_tokens
from agentmesh.identity.app import create_app as create_identity
from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared.testing.fixtures import (
    TEST_INTERNAL_TOKEN,
    TEST_KEY_ENCRYPTION_KEY,
    app_client,
)
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .test_conversations import CONV
from .test_memory import as_langchain

PASSWORD = "correct horse battery staple"
EVERYTHING = (
    "Help {{ user.name }} <{{user.email}}> of {{workspace.name}} in "
    "'{{conversation.title}}' on {{date}} at {{ datetime }} near {{station}}."
)


@pytest.fixture
async def identity(common_settings):
    app = create_identity(
        IdentitySettings(
            common=common_settings,
            key_encryption_key=TEST_KEY_ENCRYPTION_KEY,
            internal_token=TEST_INTERNAL_TOKEN,
        )
    )
    async with app_client(app) as client:
        client.app = app
        yield client


@pytest.fixture
async def llm():
    async with FakeOpenAI(reply="Noted.") as server:
        yield server


@pytest.fixture
def agent_with(agents, make_agent, llm):
    """``await agent_with(headers, **config)``: an agent on the local OpenAI stand-in."""

    async def make(headers: dict, **config) -> dict:
        provider = await agents.post(
            "/api/v1/providers",
            headers=headers,
            json={
                "kind": "openai",
                "name": "local",
                "base_url": llm.base_url,
                "api_key": llm.api_key,
            },
        )
        assert provider.status_code == 201, provider.text
        return await make_agent(
            headers, provider_id=provider.json()["id"], model="fake-model", **config
        )

    return make


async def sent(chat, llm, headers: dict, agent: dict, contents: list[str], **conversation):
    """Start a conversation, send ``contents``; the messages the model got last."""
    created = await chat.post(CONV, headers=headers, json={"agent_id": agent["id"], **conversation})
    assert created.status_code == 201, created.text
    for content in contents:
        answer = await chat.post(
            f"{CONV}/{created.json()['id']}/messages", headers=headers, json={"content": content}
        )
        assert answer.status_code == 200, answer.text
    bodies = [
        r.body
        for r in llm.requests
        if r.path.endswith("/chat/completions")
        and "title" not in json.dumps(r.body["messages"][0]).lower()
    ]
    return bodies[-1]["messages"]


async def test_every_variable_renders(identity, chat, agent_with, llm, token_issuer):
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    registered = await identity.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "Ada Lovelace"}
    )
    assert registered.status_code == 201, registered.text
    user_id = registered.json()["id"]
    login = await identity.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    workspace = await identity.post(
        "/api/v1/workspaces",
        json={"name": "Analytical Engines"},
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert workspace.status_code == 201, workspace.text
    headers = token_issuer.headers(user_id, workspace_id=workspace.json()["id"])
    agent = await agent_with(headers, instructions=EVERYTHING)
    created_on = datetime.now(UTC)
    station = {"station": "Paddington {{user.email}}"}
    messages = await sent(
        chat,
        llm,
        headers,
        agent,
        ["Hello"],
        title="Travel plans",
        variables=station,
        timezone="Asia/Tokyo",
    )
    system = messages[0]
    assert system["role"] == "system"
    prefix = f"Help Ada Lovelace <{email}> of Analytical Engines in 'Travel plans' on "
    assert system["content"].startswith(prefix), system["content"]
    date, _, rest = system["content"][len(prefix) :].partition(" at ")
    moment, _, tail = rest.partition(" near ")
    assert tail == "Paddington {{user.email}}."  # a value is text, never a template
    when = datetime.fromisoformat(moment)
    assert when.utcoffset() == timedelta(hours=9)  # in the conversation's zone
    assert date == when.date().isoformat()
    assert abs(when - created_on) < timedelta(hours=1)  # now, not some fixed date
    assert messages[-1] == {"role": "user", "content": "Hello"}


async def test_defaults_render_empty_and_utc(chat, agent_with, llm, token_issuer):
    """No identity answering, no conversation variables, no title, no zone: the names
    render empty (the run still answers) and the date is UTC's."""
    headers = token_issuer.headers()
    agent = await agent_with(
        headers,
        instructions="[{{user.name}}|{{workspace.name}}|"
        "{{conversation.title}}|{{station}}] {{datetime}}",
    )
    messages = await sent(chat, llm, headers, agent, ["Hi"], auto_title=False)
    head, _, moment = messages[0]["content"].partition(" ")
    assert head == "[|||]"
    assert datetime.fromisoformat(moment).utcoffset() == timedelta(0)


async def test_literal_text_is_sent_as_written(chat, agent_with, llm, token_issuer):
    headers = token_issuer.headers()
    text = 'Answer in JSON like {"a": {"b": 1}}. {% raw %}{{ not a variable }}{% endraw %}'
    agent = await agent_with(headers, instructions=text)
    messages = await sent(chat, llm, headers, agent, ["Hi"], auto_title=False)
    assert messages[0]["content"] == 'Answer in JSON like {"a": {"b": 1}}. {{ not a variable }}'


async def test_conversation_variables_and_timezone_are_checked(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    good = await chat.post(
        CONV,
        headers=headers,
        json={
            "agent_id": agent["id"],
            "variables": {"station": "Kings Cross"},
            "timezone": "America/New_York",
        },
    )
    assert good.status_code == 201, good.text
    assert good.json()["variables"] == {"station": "Kings Cross"}
    assert good.json()["timezone"] == "America/New_York"
    fetched = (await chat.get(f"{CONV}/{good.json()['id']}", headers=headers)).json()
    assert fetched["variables"] == {"station": "Kings Cross"}
    plain = (await chat.post(CONV, headers=headers, json={"agent_id": agent["id"]})).json()
    assert plain["variables"] == {} and plain["timezone"] is None
    for body, loc in [
        ({"timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"timezone": "../../etc/passwd"}, ["body", "timezone"]),
        ({"timezone": "Europe"}, ["body", "timezone"]),  # a directory of the zone files
        ({"timezone": "zone.tab"}, ["body", "timezone"]),
        ({"timezone": "localtime"}, ["body", "timezone"]),  # the host's, not a zone
        ({"variables": {"user": "x"}}, ["body", "variables", "user", "[key]"]),
        ({"variables": {"date": "x"}}, ["body", "variables", "date", "[key]"]),
        ({"variables": {"not-a-name": "x"}}, ["body", "variables", "not-a-name", "[key]"]),
        ({"variables": {"n": 3}}, ["body", "variables", "n"]),
        ({"variables": {"n": "x" * 2001}}, ["body", "variables", "n"]),
        ({"variables": {f"v{i}": "x" for i in range(51)}}, ["body", "variables"]),
    ]:
        response = await chat.post(CONV, headers=headers, json={"agent_id": agent["id"], **body})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["type"].endswith("/validation-error")
        assert loc in [e["loc"] for e in response.json()["errors"]], response.json()["errors"]


SHOTS = [{"user": f"Example question {i}?", "assistant": f"Example answer {i}."} for i in (1, 2)]
TURN = "The quarterly report covers revenue, hiring, churn and the roadmap. " * 3


async def test_examples_follow_the_instructions_and_count_in_the_window(
    chat, agent_with, llm, token_issuer
):
    headers = token_issuer.headers()
    memory = {"window_tokens": 256}
    plain = await agent_with(headers, instructions="Be brief.", memory=memory)
    shots = await agent_with(headers, instructions="Be brief.", memory=memory, examples=SHOTS)
    turns = [f"Turn {i}. {TURN}" for i in range(4)]
    without = await sent(chat, llm, headers, plain, turns, auto_title=False)
    with_shots = await sent(chat, llm, headers, shots, turns, auto_title=False)
    assert with_shots[:5] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Example question 1?"},
        {"role": "assistant", "content": "Example answer 1."},
        {"role": "user", "content": "Example question 2?"},
        {"role": "assistant", "content": "Example answer 2."},
    ]
    assert with_shots[-1]["content"].startswith("Turn 3.")
    assert count_message_tokens(as_langchain(with_shots)) <= 256
    # The examples took room older turns had: fewer of them fit.
    history = with_shots[5:]
    assert len(history) < len(without) - 1
    assert history == without[len(without) - len(history) :]


async def test_examples_that_do_not_fit_are_left_out(chat, agent_with, llm, token_issuer):
    headers = token_issuer.headers()
    big = [
        {"user": "Short?", "assistant": "Yes."},
        {"user": TURN * 8, "assistant": "Long."},
        {"user": "After?", "assistant": "Never sent."},
    ]
    agent = await agent_with(headers, memory={"window_tokens": 256}, examples=big)
    messages = await sent(chat, llm, headers, agent, ["Hi"], auto_title=False)
    assert [m["content"] for m in messages[1:]] == ["Short?", "Yes.", "Hi"]


async def test_the_profile_rpc_is_for_services_only(identity, chat):
    from agentmesh.chat.agents_client import nats_client

    nc = nats_client(chat.app.state.runtime.broker)
    body = json.dumps({"user_id": str(uuid.uuid4())}).encode()
    refused = await nc.request(
        "identity.rpc.profile", body, timeout=5, headers={"Authorization": "Bearer wrong"}
    )
    assert json.loads(refused.data) == {"error": "unauthorized"}
    service = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}
    unknown = await nc.request("identity.rpc.profile", body, timeout=5, headers=service)
    assert json.loads(unknown.data) == {"user": None, "workspace": None}


async def test_instructions_saved_before_templates_are_sent_as_written(
    chat, agent_with, llm, token_issuer
):
    """An agent saved before instructions were checked may hold any ``{{ }}``: its
    instructions go to the model as they are, never a failed run."""
    from sqlalchemy import update

    from agentmesh.chat.models import AgentSnapshot

    headers = token_issuer.headers()
    agent = await agent_with(headers)
    old = "Shout {{ user.name | upper }} {% for x in y %}{{ x }}{% endfor %}"
    async with chat.app.state.sessionmaker() as session, session.begin():
        snapshot = await session.get(AgentSnapshot, uuid.UUID(agent["id"]))
        await session.execute(
            update(AgentSnapshot)
            .where(AgentSnapshot.agent_id == snapshot.agent_id)
            .values(config={**snapshot.config, "instructions": old})
        )
    messages = await sent(chat, llm, headers, agent, ["Hi"], auto_title=False)
    assert messages[0]["content"] == old


async def test_a_callers_instructions_are_text_not_a_template(chat, agent_with, llm, token_issuer):
    """/v1/chat/completions system messages and /v1/responses instructions come after the
    agent's rendered instructions, as written; the agent's examples come after both."""
    headers = token_issuer.headers()
    agent = await agent_with(
        headers, instructions="Agent at [{{station}}] on {{date}}.", examples=SHOTS[:1]
    )
    theirs = "Caller {{ user.email }} {% for x in y %}"
    completion = await chat.post(
        "/v1/chat/completions",
        headers=headers,
        json={
            "model": agent["id"],
            "messages": [{"role": "system", "content": theirs}, {"role": "user", "content": "Hi"}],
        },
    )
    assert completion.status_code == 200, completion.text
    response = await chat.post(
        "/v1/responses",
        headers=headers,
        json={"model": agent["id"], "input": "Hi", "instructions": theirs},
    )
    assert response.status_code == 200, response.text
    bodies = [r.body for r in llm.requests if r.path.endswith("/chat/completions")]
    today = datetime.now(UTC).date()
    for body in bodies[-2:]:
        system, *rest = body["messages"]
        head, _, tail = system["content"].partition("\n\n")
        assert head.startswith("Agent at [] on ") and tail == theirs
        assert abs(
            datetime.fromisoformat(head[len("Agent at [] on ") : -1]).date() - today
        ) <= timedelta(days=1)
        assert [m["content"] for m in rest] == ["Example question 1?", "Example answer 1.", "Hi"]

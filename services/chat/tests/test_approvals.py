"""A person approves a tool call before it runs: the run pauses (``requires_action``),
durably, and goes on after ``POST /runs/{id}/approvals``, on any replica."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import text

from agentmesh.chat.app import create_app as create_chat
from agentmesh.shared.testing.fixtures import app_client

from .conftest import chat_settings, wait_for_snapshot
from .test_conversations import CONV, parse_sse
from .test_mcp_tools import mcp_url, register  # noqa: F401 (a fixture)
from .workspaces import eventually

RUNS = "/api/v1/runs"
ASKED = {"id": "calculator", "policy": "always_ask"}
QUESTION = "Use the calculator on 2+3"


def of(events: list[dict], kind: str) -> list[dict]:
    return [e["data"] for e in events if e["event"] == kind]


async def ask(chat, headers: dict, agent_id: str, content: str = QUESTION):
    conversation = (await chat.post(CONV, json={"agent_id": agent_id}, headers=headers)).json()
    response = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        json={"content": content, "stream": True},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return parse_sse(response.text), conversation["id"], response.headers["X-Run-Id"]


async def messages(chat, headers: dict, conversation_id: str) -> list[dict]:
    listed = await chat.get(f"{CONV}/{conversation_id}/messages", headers=headers)
    assert listed.status_code == 200, listed.text
    return listed.json()["items"]


async def test_a_call_waits_for_approval_then_runs_and_the_answer_streams_on(
    chat, make_agent, token_issuer
):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    agent = await make_agent(headers, tools=[ASKED])
    events, conversation_id, run_id = await ask(chat, headers, agent["id"])

    [asked] = of(events, "tool.approval_required")
    assert asked["run_id"] == run_id and asked["name"] == "calculator"
    assert asked["args"] == {"expression": "2+3"} and asked["call_id"]
    assert events[-1] == {
        "id": events[-2]["id"] + 1,
        "event": "done",
        "data": {"status": "requires_action"},
    }
    assert not of(events, "tool.call") and not of(events, "tool.result")  # nothing ran
    run = (await chat.get(f"{RUNS}/{run_id}", headers=headers)).json()
    assert run["status"] == "requires_action" and run["assistant_message_id"] is None
    assert [m["role"] for m in await messages(chat, headers, conversation_id)] == ["user"]

    decided = await chat.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": asked["call_id"], "approve": True, "stream": True},
    )
    assert decided.status_code == 200, decided.text
    after = parse_sse(decided.text)
    last = events[-1]["id"]
    assert [e["id"] for e in after] == list(range(last + 1, last + 1 + len(after)))
    [call] = of(after, "tool.call")
    assert call["approval"]["approve"] is True and call["approval"]["decided_by"] == str(user_id)
    assert of(after, "tool.result")[0]["result"] == "5"
    [completed] = of(after, "message.completed")
    assert completed["status"] == "completed" and '"5"' in completed["content"]
    assert after[-1]["data"] == {"status": "completed"}

    # The same continuation on GET /runs/{id}/events after the pause's last event.
    followed = await chat.get(
        f"{RUNS}/{run_id}/events", headers={**headers, "Last-Event-ID": str(last)}
    )
    assert [(e["id"], e["event"]) for e in parse_sse(followed.text)] == [
        (e["id"], e["event"]) for e in after
    ]

    [_, answer] = await messages(chat, headers, conversation_id)
    [stored] = answer["tool_calls"]
    assert stored["result"] == "5" and stored["id"] == asked["call_id"]
    approval = stored["approval"]
    assert approval["approve"] is True and approval["decided_by"] == str(user_id)
    assert approval["reason"] is None and approval["at"]
    run = (await chat.get(f"{RUNS}/{run_id}", headers=headers)).json()
    assert run["status"] == "completed" and run["assistant_message_id"] == answer["id"]

    again = await chat.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": asked["call_id"], "approve": True},
    )
    assert again.status_code == 409 and again.json()["type"].endswith("run-not-awaiting-approval")


async def test_a_denied_call_tells_the_model_why_and_the_run_goes_on(
    chat, make_agent, token_issuer
):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[ASKED])
    events, conversation_id, run_id = await ask(chat, headers, agent["id"])
    [asked] = of(events, "tool.approval_required")

    wrong = await chat.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": "call_other", "approve": True},
    )
    assert wrong.status_code == 422 and wrong.json()["type"].endswith("approval-call-unknown")
    decided = await chat.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": asked["call_id"], "approve": False, "reason": "not on a Friday"},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "completed"

    [_, answer] = await messages(chat, headers, conversation_id)
    [stored] = answer["tool_calls"]
    assert stored["approval"]["approve"] is False
    assert stored["approval"]["reason"] == "not on a Friday"
    assert "Denied" in stored["result"] and "not on a Friday" in stored["result"]
    assert "not on a Friday" in answer["content"]  # the model was told


async def test_a_never_tool_is_refused_without_asking(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[{"id": "calculator", "policy": "never"}])
    events, _, _ = await ask(chat, headers, agent["id"])
    assert not of(events, "tool.approval_required")
    [result] = of(events, "tool.result")
    assert "may not be used" in result["result"]
    assert events[-1]["data"] == {"status": "completed"}


async def test_mcp_tools_ask_by_default_and_a_per_tool_policy_allows(
    agents,
    chat,
    make_agent,
    token_issuer,
    mcp_url,  # noqa: F811
):
    headers = token_issuer.headers()
    server_id = await register(agents, headers, mcp_url)
    config = {"server_id": server_id, "tools": ["shout", "add"]}
    asking = await make_agent(headers, tools=[{"id": "mcp", "config": config}])
    events, _, _ = await ask(chat, headers, asking["id"], "Use the shout tool on hi")
    [asked] = of(events, "tool.approval_required")
    assert asked["name"] == "shout" and not of(events, "tool.result")

    policy = {"shout": "always_allow"}
    allowed = await make_agent(headers, tools=[{"id": "mcp", "config": config, "policy": policy}])
    assert allowed["tools"][0]["policy"] == policy
    events, _, _ = await ask(chat, headers, allowed["id"], "Use the shout tool on hi")
    assert of(events, "tool.result")[0]["result"] == "USE THE SHOUT TOOL ON HI"


async def test_the_policy_is_checked_when_the_agent_is_saved(agents, token_issuer):
    headers = token_issuer.headers()
    for tool in (
        {"id": "calculator", "policy": "sometimes"},
        {"id": "calculator", "policy": {"calculator": "never"}},
    ):
        body = {"name": "Bad", "tools": [tool]}
        response = await agents.post("/api/v1/agents", json=body, headers=headers)
        assert response.status_code == 422, response.text


async def test_another_replica_decides_after_the_first_one_is_gone(
    common, chat, make_agent, token_issuer
):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[ASKED])
    first = create_chat(chat_settings(common))
    async with app_client(first) as replica:
        replica.app = first
        await wait_for_snapshot(replica, agent["id"])
        events, conversation_id, run_id = await ask(replica, headers, agent["id"])
    [asked] = of(events, "tool.approval_required")  # the first replica is closed now

    decided = await chat.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": asked["call_id"], "approve": True},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "completed"
    [_, answer] = await messages(chat, headers, conversation_id)
    assert answer["tool_calls"][0]["result"] == "5" and '"5"' in answer["content"]
    followed = await chat.get(f"{RUNS}/{run_id}/events", headers=headers)
    replayed = parse_sse(followed.text)  # to the pause's done, from the stream
    assert [e["id"] for e in replayed] == [e["id"] for e in events]


async def test_only_the_owner_or_a_workspace_admin_decides(chat, make_agent, token_issuer):
    workspace = uuid.uuid4()
    owner = token_issuer.headers(workspace_id=workspace, workspace_role="owner")
    member = token_issuer.headers(workspace_id=workspace, workspace_role="member")
    other = token_issuer.headers(workspace_id=workspace, workspace_role="member")
    admin = token_issuer.headers(workspace_id=workspace, workspace_role="admin")
    stranger = token_issuer.headers()  # an admin of their own workspace only
    agent = await make_agent(owner, tools=[ASKED])
    events, _, run_id = await ask(chat, member, agent["id"])
    [asked] = of(events, "tool.approval_required")
    body = {"call_id": asked["call_id"], "approve": True}
    for headers in (other, stranger):
        refused = await chat.post(f"{RUNS}/{run_id}/approvals", headers=headers, json=body)
        assert refused.status_code == 404, refused.text
    decided = await chat.post(f"{RUNS}/{run_id}/approvals", headers=admin, json=body)
    assert decided.status_code == 200 and decided.json()["status"] == "completed"


@pytest.fixture
async def hasty(common, agents):
    """A replica whose runs wait for approval a moment only, and sweep often."""
    app = create_chat(
        chat_settings(common, approval_timeout_seconds=0.5, run_heartbeat_seconds=0.2)
    )
    async with app_client(app) as client:
        client.app = app
        yield client


async def test_a_run_left_waiting_expires_and_releases_its_reservation(hasty, agents, token_issuer):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    body = {"name": "Asker", "model": "offline", "tools": [ASKED], "max_output_tokens": 300}
    agent = (await agents.post("/api/v1/agents", json=body, headers=headers)).json()
    await wait_for_snapshot(hasty, agent["id"])
    budget = f"/api/v1/budgets/{user_id}"
    put = await hasty.put(
        budget, json={"monthly_tokens": 100_000}, headers=token_issuer.headers(roles=("admin",))
    )
    assert put.status_code == 200, put.text
    events, _, run_id = await ask(hasty, headers, agent["id"])
    assert events[-1]["data"] == {"status": "requires_action"}

    async def expired() -> bool:
        run = (await hasty.get(f"{RUNS}/{run_id}", headers=headers)).json()
        return run["status"] == "expired"

    await eventually(expired)
    run = (await hasty.get(f"{RUNS}/{run_id}", headers=headers)).json()
    assert run["error"]["type"].endswith("approval-expired")
    spent = (await hasty.get(budget, headers=headers)).json()
    assert spent["reserved_tokens"] == 0
    assert spent["spent_tokens"] == run["input_tokens"] + run["output_tokens"] > 0
    async with hasty.app.state.sessionmaker() as session:
        left = await session.scalar(
            text("SELECT count(*) FROM chat.run_pauses WHERE run_id = CAST(:id AS uuid)"),
            {"id": run_id},
        )
    assert left == 0
    late = await hasty.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": of(events, "tool.approval_required")[0]["call_id"], "approve": True},
    )
    assert late.status_code == 409
    ended = parse_sse(
        (
            await hasty.get(
                f"{RUNS}/{run_id}/events",
                headers={**headers, "Last-Event-ID": str(events[-1]["id"])},
            )
        ).text
    )
    assert [e["event"] for e in ended] == ["run.expired", "done"]
    assert ended[-1]["data"] == {"status": "expired"}


async def test_chat_completions_refuses_an_agent_whose_tools_need_approval(
    chat, make_agent, token_issuer
):
    headers = token_issuer.headers()
    agent = await make_agent(headers, name="Asker", tools=[ASKED])
    response = await chat.post(
        "/v1/chat/completions",
        headers=headers,
        json={"model": agent["id"], "messages": [{"role": "user", "content": QUESTION}]},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "calculator" in error["message"]
    assert error["code"] == "tool_approval_unsupported" and error["param"] == "model"
    assert "approval" in error["message"]
    # With the caller's own tools the agent's don't run: nothing to ask about.
    tool = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    allowed = await chat.post(
        "/v1/chat/completions",
        headers=headers,
        json={
            "model": agent["id"],
            "tools": [tool],
            "messages": [{"role": "user", "content": "hello"}],
        },
    )
    assert allowed.status_code == 200, allowed.text


async def test_responses_ask_with_an_mcp_approval_request_and_take_the_answer(
    chat, make_agent, token_issuer
):
    headers = token_issuer.headers()
    await make_agent(headers, name="Asker", tools=[ASKED])
    first = await chat.post(
        "/v1/responses", headers=headers, json={"model": "asker", "input": QUESTION}
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "completed"
    [request] = [item for item in body["output"] if item["type"] == "mcp_approval_request"]
    assert request["name"] == "calculator" and request["server_label"] == "agentmesh"
    assert json.loads(request["arguments"]) == {"expression": "2+3"}
    assert request["id"].startswith("mcpr_")
    assert not [item for item in body["output"] if item["type"] == "mcp_call"]  # nothing ran

    answer = {
        "type": "mcp_approval_response",
        "approval_request_id": request["id"],
        "approve": True,
    }
    second = await chat.post(
        "/v1/responses",
        headers=headers,
        json={"model": "asker", "previous_response_id": body["id"], "input": [answer]},
    )
    assert second.status_code == 200, second.text
    output = second.json()["output"]
    assert [item["type"] for item in output] == ["mcp_call", "message"]
    assert output[0]["approval_request_id"] == request["id"] and output[0]["output"] == "5"
    assert '"5"' in output[1]["content"][0]["text"]
    # the model saw its own call before the result (a provider rejects a result without it)
    assert "The calculator tool returned" in output[1]["content"][0]["text"]

    later = {"model": "asker", "previous_response_id": second.json()["id"], "input": [answer]}
    again = await chat.post("/v1/responses", headers=headers, json=later)
    assert again.status_code == 400 and "answered already" in again.json()["error"]["message"]

    # Denied, with the items given back instead of previous_response_id (store: false).
    denied = await chat.post(
        "/v1/responses",
        headers=headers,
        json={
            "model": "asker",
            "store": False,
            "input": [
                {"role": "user", "content": QUESTION},
                request,
                {**answer, "approve": False, "reason": "no sums today"},
            ],
        },
    )
    assert denied.status_code == 200, denied.text
    [call, message] = denied.json()["output"]
    assert "Denied" in call["output"] and "no sums today" in message["content"][0]["text"]
    unknown = await chat.post(
        "/v1/responses",
        headers=headers,
        json={
            "model": "asker",
            "input": [
                {"role": "user", "content": "hi"},
                {**answer, "approval_request_id": "mcpr_nope"},
            ],
        },
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["param"].startswith("input[")


async def test_a_run_waiting_for_approval_is_not_swept_as_orphaned(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[ASKED])
    events, _, run_id = await ask(chat, headers, agent["id"])
    async with chat.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            text(
                "UPDATE chat.runs SET heartbeat_at = now() - interval '1 day'"
                " WHERE id = CAST(:id AS uuid)"
            ),
            {"id": run_id},
        )
    assert await chat.app.state.run_watch.sweep() == []
    run = (await chat.get(f"{RUNS}/{run_id}", headers=headers)).json()
    assert run["status"] == "requires_action"
    call_id = of(events, "tool.approval_required")[0]["call_id"]
    decided = await chat.post(
        f"{RUNS}/{run_id}/approvals", headers=headers, json={"call_id": call_id, "approve": True}
    )
    assert decided.json()["status"] == "completed"


async def test_a_run_waiting_for_approval_can_be_cancelled(chat, agents, token_issuer):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    body = {"name": "Asker", "model": "offline", "tools": [ASKED], "max_output_tokens": 300}
    agent = (await agents.post("/api/v1/agents", json=body, headers=headers)).json()
    await wait_for_snapshot(chat, agent["id"])
    budget = f"/api/v1/budgets/{user_id}"
    admin = token_issuer.headers(roles=("admin",))
    assert (await chat.put(budget, json={"monthly_tokens": 100_000}, headers=admin)).is_success
    events, _, run_id = await ask(chat, headers, agent["id"])
    assert (await chat.get(budget, headers=headers)).json()["reserved_tokens"] == 300

    cancelled = await chat.post(f"{RUNS}/{run_id}/cancel", headers=headers)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert (await chat.get(budget, headers=headers)).json()["reserved_tokens"] == 0
    call_id = of(events, "tool.approval_required")[0]["call_id"]
    late = await chat.post(
        f"{RUNS}/{run_id}/approvals", headers=headers, json={"call_id": call_id, "approve": True}
    )
    assert late.status_code == 409
    ended = parse_sse(
        (
            await chat.get(
                f"{RUNS}/{run_id}/events",
                headers={**headers, "Last-Event-ID": str(events[-1]["id"])},
            )
        ).text
    )
    assert [e["event"] for e in ended] == ["run.cancelled", "done"]


async def test_of_two_decisions_at_once_one_wins(common, chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[ASKED])
    other = create_chat(chat_settings(common))
    async with app_client(other) as replica:
        replica.app = other
        await wait_for_snapshot(replica, agent["id"])
        events, conversation_id, run_id = await ask(chat, headers, agent["id"])
        call_id = of(events, "tool.approval_required")[0]["call_id"]
        url = f"{RUNS}/{run_id}/approvals"
        answers = await asyncio.gather(
            chat.post(url, headers=headers, json={"call_id": call_id, "approve": True}),
            replica.post(url, headers=headers, json={"call_id": call_id, "approve": False}),
        )
    assert sorted(answer.status_code for answer in answers) == [200, 409]
    [_, answer] = await messages(chat, headers, conversation_id)
    assert len(answer["tool_calls"]) == 1  # the call ran (or was denied) once


async def test_a_turn_not_streamed_that_pauses_answers_202_with_the_call(
    chat, make_agent, token_issuer
):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[ASKED])
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    paused = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        json={"content": QUESTION, "stream": False},
        headers=headers,
    )
    assert paused.status_code == 202, paused.text
    body = paused.json()
    run_id = paused.headers["X-Run-Id"]
    assert body["run_id"] == run_id and body["status"] == "requires_action"
    asked = body["approval_required"]
    assert asked["name"] == "calculator" and asked["args"] == {"expression": "2+3"}

    decided = await chat.post(
        f"{RUNS}/{run_id}/approvals",
        headers=headers,
        json={"call_id": asked["call_id"], "approve": True},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "completed"
    [_, answer] = await messages(chat, headers, conversation["id"])
    assert answer["tool_calls"][0]["result"] == "5"

"""Conversations over HTTP: turns with the offline model, streaming, tools, ownership."""

from __future__ import annotations

import json

CONV = "/api/v1/conversations"


def parse_sse(body: str) -> list[dict]:
    events = []
    for block in body.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line.startswith(":") or ": " not in line:
                continue
            key, value = line.split(": ", 1)
            fields[key] = value
        if "event" in fields:
            events.append(
                {
                    "id": int(fields["id"]),
                    "event": fields["event"],
                    "data": json.loads(fields["data"]),
                }
            )
    return events


async def test_a_turn_answers_and_is_kept(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    created = await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)
    assert created.status_code == 201, created.text
    conversation = created.json()
    answer = await chat.post(
        f"{CONV}/{conversation['id']}/messages", json={"content": "Hello there"}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    message = answer.json()
    assert message["role"] == "assistant" and message["content"]
    assert message["status"] == "completed" and message["output_tokens"] > 0
    assert message["agent_version"] == 1
    history = (await chat.get(f"{CONV}/{conversation['id']}/messages", headers=headers)).json()
    assert [m["role"] for m in history["items"]] == ["user", "assistant"]
    assert history["items"][1]["parent_id"] == history["items"][0]["id"]
    # The answer is returned as written, not read back: it must equal the stored one.
    assert history["items"][1] == message


async def test_streaming_events_in_order(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, tools=[{"id": "calculator"}])
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    response = await chat.post(
        f"{CONV}/{conversation['id']}/messages",
        json={"content": "Use the calculator for 6*7", "stream": True},
        headers=headers,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "done"
    assert "tool.call" in kinds and "tool.result" in kinds and "message.delta" in kinds
    result = next(e for e in events if e["event"] == "tool.result")
    assert "42" in result["data"]["result"]
    completed = next(e for e in events if e["event"] == "message.completed")
    assert completed["data"]["usage"]["output_tokens"] > 0
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))


async def test_other_users_get_404(chat, make_agent, token_issuer):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    agent = await make_agent(owner)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=owner)).json()
    url = f"{CONV}/{conversation['id']}"
    for method, path, body in (
        ("GET", "", None),
        ("PATCH", "", {"title": "x"}),
        ("DELETE", "", None),
        ("GET", "/messages", None),
        ("POST", "/messages", {"content": "hi"}),
    ):
        response = await chat.request(method, url + path, json=body, headers=stranger)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    stolen = await chat.post(CONV, json={"agent_id": agent["id"]}, headers=stranger)
    assert stolen.status_code == 404


async def test_regenerate_keeps_the_old_answer_and_edit_branches(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    url = f"{CONV}/{conversation['id']}/messages"
    first = (await chat.post(url, json={"content": "First question"}, headers=headers)).json()
    second = (await chat.post(url, json={"content": "Second question"}, headers=headers)).json()
    again = await chat.post(f"{url}/{second['id']}/regenerate", json={}, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] != second["id"]
    assert again.json()["parent_id"] == second["parent_id"]  # a sibling: the old is a variant
    items = (await chat.get(url, headers=headers)).json()["items"]
    assert [m["id"] for m in items].count(second["id"]) == 1 and len(items) == 5
    question = first["parent_id"]
    edited = await chat.patch(
        f"{url}/{question}", json={"content": "Edited question"}, headers=headers
    )
    assert edited.status_code == 200, edited.text
    items = (await chat.get(url, headers=headers)).json()["items"]
    new_question = next(m for m in items if m["content"] == "Edited question")
    assert new_question["parent_id"] is None  # branched from where the edited one was
    assert edited.json()["parent_id"] == new_question["id"]
    assert "Second question" not in edited.json()["content"]  # the old branch isn't in it
    not_an_answer = await chat.post(f"{url}/{question}/regenerate", json={}, headers=headers)
    assert not_an_answer.status_code == 404


async def test_bad_input_is_problem_json(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    url = f"{CONV}/{conversation['id']}/messages"
    for body in ({"content": ""}, {"content": "x", "stream": "maybe"}, {}):
        response = await chat.post(url, json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.headers["content-type"] == "application/problem+json"
    bad_cursor = await chat.get(f"{CONV}?cursor=nonsense", headers=headers)
    assert bad_cursor.status_code == 400, bad_cursor.text  # the one shape of every list
    assert bad_cursor.json()["type"].endswith("/invalid-cursor")
    assert (await chat.get(f"{CONV}/not-a-uuid", headers=headers)).status_code == 422


async def test_a_title_is_generated_unless_switched_off(chat, make_agent, token_issuer):
    import asyncio

    headers = token_issuer.headers()
    agent = await make_agent(headers)
    titled = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=headers)).json()
    plain = (
        await chat.post(CONV, json={"agent_id": agent["id"], "auto_title": False}, headers=headers)
    ).json()
    for conversation in (titled, plain):
        await chat.post(
            f"{CONV}/{conversation['id']}/messages",
            json={"content": "Plan a picnic in Lyon"},
            headers=headers,
        )
    for _ in range(100):
        title = (await chat.get(f"{CONV}/{titled['id']}", headers=headers)).json()["title"]
        if title:
            break
        await asyncio.sleep(0.05)
    assert title and len(title) <= 200
    assert (await chat.get(f"{CONV}/{plain['id']}", headers=headers)).json()["title"] is None

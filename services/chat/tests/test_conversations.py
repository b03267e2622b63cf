"""Conversations over HTTP: turns with the offline model, streaming, tools, ownership."""

from __future__ import annotations

import json
import uuid

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


async def _walk(chat, url: str, headers: dict, limit: int) -> list[list[dict]]:
    """Every page of a list, following ``next_cursor`` until it is null."""
    pages, cursor = [], None
    while True:
        params = {"limit": limit} if cursor is None else {"limit": limit, "cursor": cursor}
        response = await chat.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10


async def test_conversations_and_messages_come_in_pages(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    made = [
        (
            await chat.post(CONV, json={"agent_id": agent["id"], "title": f"T{i}"}, headers=headers)
        ).json()
        for i in range(3)
    ]
    pages = await _walk(chat, CONV, headers, limit=2)
    assert [len(page) for page in pages] == [2, 1]
    assert [c for page in pages for c in page] == made[::-1]  # newest first, as created
    assert [len(page) for page in await _walk(chat, CONV, headers, limit=3)] == [3]

    url = f"{CONV}/{made[0]['id']}/messages"
    assert (await chat.get(url, headers=headers)).json() == {"items": [], "next_cursor": None}
    for question in ("One", "Two"):
        await chat.post(url, json={"content": question}, headers=headers)
    everything = (await chat.get(url, headers=headers)).json()
    assert everything["next_cursor"] is None and len(everything["items"]) == 4
    assert [m["role"] for m in everything["items"]] == ["user", "assistant"] * 2
    assert everything["items"][0]["content"] == "One"
    pages = await _walk(chat, url, headers, limit=3)
    assert [len(page) for page in pages] == [3, 1]
    assert [m for page in pages for m in page] == everything["items"]  # oldest first
    assert [len(page) for page in await _walk(chat, url, headers, limit=2)] == [2, 2]


async def test_anothers_conversation_is_404_whatever_the_cursor(chat, make_agent, token_issuer):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    agent = await make_agent(owner)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=owner)).json()
    url = f"{CONV}/{conversation['id']}/messages"
    for question in ("One", "Two"):
        await chat.post(url, json={"content": question}, headers=owner)
    first = (await chat.get(url, params={"limit": 1}, headers=owner)).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    for cursor in (first["next_cursor"], "nonsense"):
        for headers, path in ((stranger, url), (owner, f"{CONV}/{uuid.uuid4()}/messages")):
            refused = await chat.get(path, params={"cursor": cursor}, headers=headers)
            assert refused.status_code == 404, (cursor, refused.text)
            assert refused.headers["content-type"] == "application/problem+json"
            assert refused.json()["type"].endswith("/conversation-not-found")
    bad = await chat.get(url, params={"cursor": "nonsense"}, headers=owner)
    assert bad.status_code == 400 and bad.json()["type"].endswith("/invalid-cursor")
    # The stranger's own list, whatever the cursor, shows nothing of the owner's.
    theirs = await chat.get(CONV, params={"cursor": first["next_cursor"]}, headers=stranger)
    assert theirs.status_code == 200 and theirs.json() == {"items": [], "next_cursor": None}


async def test_a_platform_admin_reads_any_conversations_messages(chat, make_agent, token_issuer):
    owner, admin = token_issuer.headers(), token_issuer.headers(roles=("admin",))
    agent = await make_agent(owner)
    conversation = (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=owner)).json()
    url = f"{CONV}/{conversation['id']}/messages"
    await chat.post(url, json={"content": "Hello"}, headers=owner)
    history = (await chat.get(url, headers=owner)).json()
    assert len(history["items"]) == 2
    assert (await chat.get(url, headers=admin)).json() == history
    page = (await chat.get(url, params={"limit": 1}, headers=admin)).json()
    rest = await chat.get(url, params={"cursor": page["next_cursor"]}, headers=admin)
    assert page["items"] + rest.json()["items"] == history["items"]
    # Lists stay private even to platform admins.
    assert (await chat.get(CONV, headers=admin)).json()["items"] == []


async def test_a_turn_names_only_this_conversations_messages(chat, make_agent, token_issuer):
    owner, stranger = token_issuer.headers(), token_issuer.headers()
    admin = token_issuer.headers(roles=("admin",))
    agent = await make_agent(owner)
    mine, other = [
        (await chat.post(CONV, json={"agent_id": agent["id"]}, headers=owner)).json()["id"]
        for _ in range(2)
    ]
    url, other_url = f"{CONV}/{mine}/messages", f"{CONV}/{other}/messages"
    answer = (await chat.post(url, json={"content": "Hello"}, headers=owner)).json()
    question = answer["parent_id"]
    await chat.post(other_url, json={"content": "Elsewhere"}, headers=owner)
    refused = (
        # the message of another conversation, or of the other role
        (owner, "POST", f"{other_url}/{answer['id']}/regenerate", {}),
        (owner, "PATCH", f"{other_url}/{question}", {"content": "x"}),
        (owner, "PATCH", f"{url}/{answer['id']}", {"content": "x"}),
        (owner, "POST", f"{url}/{uuid.uuid4()}/regenerate", {}),
        # someone else's conversation, whichever message
        (stranger, "POST", f"{url}/{answer['id']}/regenerate", {}),
        (stranger, "PATCH", f"{url}/{question}", {"content": "x"}),
    )
    for headers, method, path, body in refused:
        response = await chat.request(method, path, json=body, headers=headers)
        assert response.status_code == 404, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # A platform admin may open any conversation, a turn included.
    again = await chat.post(f"{url}/{answer['id']}/regenerate", json={}, headers=admin)
    assert again.status_code == 200, again.text
    assert again.json()["parent_id"] == question

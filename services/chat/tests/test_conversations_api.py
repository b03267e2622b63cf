"""/v1/conversations: OpenAI's Conversations API over native conversations."""

from __future__ import annotations

import uuid

CONVERSATIONS = "/v1/conversations"


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


async def test_conversation_crud_and_items(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    created = await chat.post(
        CONVERSATIONS,
        headers=headers,
        json={
            "metadata": {"topic": "demo"},
            "items": [
                {"type": "message", "role": "user", "content": "Hi, I am Ada"},
                {"type": "message", "role": "assistant", "content": "Hello Ada"},
            ],
        },
    )
    assert created.status_code == 200, created.text
    conversation = created.json()
    cid = conversation["id"]
    assert cid.startswith("conv_") and conversation["object"] == "conversation"
    assert conversation["metadata"] == {"topic": "demo"}

    page = (await chat.get(f"{CONVERSATIONS}/{cid}/items?order=asc", headers=headers)).json()
    assert [(i["role"], i["content"][0]["text"]) for i in page["data"]] == [
        ("user", "Hi, I am Ada"),
        ("assistant", "Hello Ada"),
    ]
    assert page["first_id"] == page["data"][0]["id"] and page["has_more"] is False
    first = (
        await chat.get(f"{CONVERSATIONS}/{cid}/items?order=asc&limit=1", headers=headers)
    ).json()
    assert first["has_more"] is True and len(first["data"]) == 1
    rest = (
        await chat.get(
            f"{CONVERSATIONS}/{cid}/items?order=asc&after={first['last_id']}", headers=headers
        )
    ).json()
    assert [i["role"] for i in rest["data"]] == ["assistant"]

    added = await chat.post(
        f"{CONVERSATIONS}/{cid}/items",
        headers=headers,
        json={
            "items": [
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
            ]
        },
    )
    assert added.status_code == 200, added.text
    fc_id = added.json()["data"][0]["id"]
    got = await chat.get(f"{CONVERSATIONS}/{cid}/items/{fc_id}", headers=headers)
    assert got.json()["type"] == "function_call"
    too_many = await chat.post(
        f"{CONVERSATIONS}/{cid}/items",
        headers=headers,
        json={"items": [{"role": "user", "content": "x"}] * 21},
    )
    assert error_of(too_many, 400)["param"] == "items"
    bad = await chat.post(
        f"{CONVERSATIONS}/{cid}/items",
        headers=headers,
        json={"items": [{"type": "web_search_call", "id": "ws_1"}]},
    )
    assert error_of(bad, 400)["param"] == "items[0].type"

    # The same record natively: the messages, in the caller's list.
    native_id = uuid.UUID(hex=cid[5:])
    messages = (
        await chat.get(f"/api/v1/conversations/{native_id}/messages", headers=headers)
    ).json()
    assert [m["content"] for m in messages["items"]][:2] in (
        ["Hi, I am Ada", "Hello Ada"],
        ["Hello Ada", "Hi, I am Ada"],
    )

    # A response on it answers with the history and appends to it; bound to its agent.
    response = await chat.post(
        "/v1/responses",
        headers=headers,
        json={"model": "keeper", "conversation": cid, "input": "What did I say?"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["conversation"] == {"id": cid}
    items = (await chat.get(f"{CONVERSATIONS}/{cid}/items?order=asc", headers=headers)).json()
    assert [i["type"] for i in items["data"]][-2:] == ["message", "message"]
    assert items["data"][-2]["content"][0]["text"] == "What did I say?"
    assert items["data"][-1]["role"] == "assistant"
    await make_agent(headers, name="Other")
    other = await chat.post(
        "/v1/responses",
        headers=headers,
        json={"model": "other", "conversation": {"id": cid}, "input": "hi"},
    )
    assert error_of(other, 400)["param"] == "model"
    both = await chat.post(
        "/v1/responses",
        headers=headers,
        json={
            "model": "keeper",
            "conversation": cid,
            "previous_response_id": response.json()["id"],
            "input": "hi",
        },
    )
    assert error_of(both, 400)["param"] == "conversation"

    # Metadata update, item delete, others' 404s, delete.
    updated = await chat.post(
        f"{CONVERSATIONS}/{cid}", headers=headers, json={"metadata": {"topic": "new"}}
    )
    assert updated.json()["metadata"] == {"topic": "new"}
    last = items["data"][-1]["id"]
    assert (await chat.delete(f"{CONVERSATIONS}/{cid}/items/{last}", headers=headers)).json()[
        "id"
    ] == cid
    after = (await chat.get(f"{CONVERSATIONS}/{cid}/items", headers=headers)).json()
    assert last not in [i["id"] for i in after["data"]]
    assert after["data"][0]["content"][0]["text"] == "What did I say?"
    stranger = token_issuer.headers()
    assert error_of(await chat.get(f"{CONVERSATIONS}/{cid}", headers=stranger), 404)
    assert error_of(await chat.get(f"{CONVERSATIONS}/{cid}/items", headers=stranger), 404)
    assert error_of(
        await chat.post(
            "/v1/responses",
            headers=stranger,
            json={"model": "keeper", "conversation": cid, "input": "x"},
        ),
        404,
    )
    deleted = await chat.delete(f"{CONVERSATIONS}/{cid}", headers=headers)
    assert deleted.json() == {"id": cid, "object": "conversation.deleted", "deleted": True}
    assert error_of(await chat.get(f"{CONVERSATIONS}/{cid}", headers=headers), 404)


async def test_native_conversation_is_visible_as_items(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers, name="Keeper")
    native = (
        await chat.post("/api/v1/conversations", headers=headers, json={"agent_id": agent["id"]})
    ).json()
    turn = await chat.post(
        f"/api/v1/conversations/{native['id']}/messages",
        headers=headers,
        json={"content": "Hello natively"},
    )
    assert turn.status_code == 200, turn.text
    cid = f"conv_{uuid.UUID(native['id']).hex}"
    items = (await chat.get(f"{CONVERSATIONS}/{cid}/items?order=asc", headers=headers)).json()
    assert [i["role"] for i in items["data"]] == ["user", "assistant"]
    assert items["data"][0]["content"][0]["text"] == "Hello natively"
    assert (await chat.get(f"{CONVERSATIONS}/{cid}", headers=headers)).json()["metadata"] == {}

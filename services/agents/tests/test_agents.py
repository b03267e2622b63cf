"""Agents through HTTP: offline default, validation, ownership, versions, ETags, events."""

from __future__ import annotations

import uuid

import pytest

AGENTS = "/api/v1/agents"
KEEPER = {"name": "Keeper", "instructions": "Keep notes.", "model": "offline"}


@pytest.fixture
def user(token_issuer):
    """Headers of a fresh user (call again for another user)."""

    def make(*, admin: bool = False) -> dict[str, str]:
        roles = ("admin", "user") if admin else ("user",)
        return token_issuer.headers(uuid.uuid4(), roles=roles)

    return make


def problem(response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.json()["type"].rsplit("/", 1)[-1]


async def test_a_minimal_offline_agent_is_complete(agents, user, outbox_events):
    response = await agents.post(AGENTS, json=KEEPER, headers=user())
    assert response.status_code == 201, response.text
    agent = response.json()
    assert agent["version"] == 1 and agent["model"] == "offline"
    assert agent["provider_id"] is None and agent["tools"] == []
    assert agent["memory"] == {"window_tokens": 4000, "summarize": False}
    assert response.headers["etag"] == '"1"'
    [event] = await outbox_events("agents.agent.created", agent["id"])
    assert event["data"]["agent_version"] == 1
    assert event["data"]["owner_id"] == agent["owner_id"]
    assert event["data"]["config"]["instructions"] == "Keep notes."


async def test_validation_names_the_field(agents, user):
    headers = user()
    hot = await agents.post(AGENTS, json={**KEEPER, "temperature": 2.5}, headers=headers)
    assert hot.status_code == 422 and problem(hot) == "validation-error"
    assert ["body", "temperature"] in [e["loc"] for e in hot.json()["errors"]]
    tool = await agents.post(AGENTS, json={**KEEPER, "tools": [{"id": "rm-rf"}]}, headers=headers)
    assert tool.status_code == 422 and problem(tool) == "invalid-reference"
    assert tool.json()["field"] == "tools[0].id"
    provider = await agents.post(
        AGENTS, json={**KEEPER, "provider_id": str(uuid.uuid4())}, headers=headers
    )
    assert provider.status_code == 422 and provider.json()["field"] == "provider_id"
    kb = await agents.post(
        AGENTS, json={**KEEPER, "knowledge_base_ids": [str(uuid.uuid4())]}, headers=headers
    )
    assert kb.status_code == 422 and kb.json()["field"] == "knowledge_base_ids"
    extra = await agents.post(
        AGENTS, json={**KEEPER, "owner_id": str(uuid.uuid4())}, headers=headers
    )
    assert extra.status_code == 422
    assert (await agents.post(AGENTS, json=KEEPER)).status_code == 401


async def test_other_users_get_404_and_admins_see_everything(agents, user):
    owner, stranger, admin = user(), user(), user(admin=True)
    agent = (await agents.post(AGENTS, json=KEEPER, headers=owner)).json()
    url = f"{AGENTS}/{agent['id']}"
    for method, body in (("GET", None), ("PATCH", {"name": "Mine now"}), ("DELETE", None)):
        response = await agents.request(method, url, json=body, headers=stranger)
        assert response.status_code == 404 and problem(response) == "agent-not-found"
    for path in ("/versions", "/versions/1"):
        assert (await agents.get(url + path, headers=stranger)).status_code == 404
    assert (await agents.get(AGENTS, headers=stranger)).json()["items"] == []
    assert (await agents.get(url, headers=admin)).status_code == 200


async def test_every_update_is_a_version_and_old_ones_can_be_restored(agents, user, outbox_events):
    headers = user()
    agent = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    url = f"{AGENTS}/{agent['id']}"
    v2 = await agents.patch(
        url, json={"instructions": "Keep short notes.", "tags": ["notes"]}, headers=headers
    )
    assert v2.status_code == 200 and v2.json()["version"] == 2
    assert v2.json()["name"] == "Keeper"  # untouched fields are kept
    versions = (await agents.get(f"{url}/versions", headers=headers)).json()["items"]
    assert [v["version"] for v in versions] == [2, 1]
    v1 = (await agents.get(f"{url}/versions/1", headers=headers)).json()
    assert v1["config"]["instructions"] == "Keep notes."
    assert (await agents.get(f"{url}/versions/9", headers=headers)).status_code == 404
    restored = await agents.post(f"{url}/versions/1/restore", headers=headers)
    assert restored.status_code == 200
    assert restored.json()["version"] == 3
    assert restored.json()["instructions"] == "Keep notes."
    newest = (await agents.get(f"{url}/versions", headers=headers)).json()["items"][0]
    assert newest["restored_from"] == 1
    events = await outbox_events("agents.agent.updated", agent["id"])
    assert [e["data"]["agent_version"] for e in events] == [2, 3]
    assert events[-1]["data"]["config"]["instructions"] == "Keep notes."


async def test_stale_if_match_is_412(agents, user):
    headers = user()
    created = await agents.post(AGENTS, json=KEEPER, headers=headers)
    url = f"{AGENTS}/{created.json()['id']}"
    first = await agents.patch(
        url, json={"name": "A"}, headers={**headers, "If-Match": created.headers["etag"]}
    )
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    stale = await agents.patch(
        url, json={"name": "B"}, headers={**headers, "If-Match": created.headers["etag"]}
    )
    assert stale.status_code == 412 and problem(stale) == "precondition-failed"
    assert stale.headers["etag"] == '"2"'
    blind = await agents.patch(url, json={"name": "C"}, headers=headers)
    assert blind.status_code == 200 and blind.json()["version"] == 3
    got = await agents.get(url, headers=headers)
    assert got.headers["etag"] == '"3"' and got.json()["name"] == "C"


async def test_listing_pages_filters_and_sorts(agents, user):
    headers = user()
    tag = f"t{uuid.uuid4().hex[:6]}"
    ids = []
    for i in range(5):
        body = {**KEEPER, "name": f"Bot {i} 100%", "tags": [tag] if i % 2 == 0 else []}
        ids.append((await agents.post(AGENTS, json=body, headers=headers)).json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await agents.get(AGENTS, params=params, headers=headers)).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    oldest_first = (await agents.get(AGENTS, params={"sort": "created_at"}, headers=headers)).json()
    assert [a["id"] for a in oldest_first["items"]] == ids
    tagged = (await agents.get(AGENTS, params={"tag": tag}, headers=headers)).json()
    assert sorted(a["id"] for a in tagged["items"]) == sorted(ids[0::2])
    named = (await agents.get(AGENTS, params={"q": "bot 3 100%"}, headers=headers)).json()
    assert [a["id"] for a in named["items"]] == [ids[3]]
    bad = await agents.get(AGENTS, params={"cursor": "not-a-cursor"}, headers=headers)
    assert bad.status_code == 400 and problem(bad) == "invalid-cursor"
    assert (await agents.get(AGENTS, params={"sort": "name"}, headers=headers)).status_code == 422


async def test_cursors_page_a_filtered_oldest_first_listing(agents, user):
    headers = user()
    tag = f"t{uuid.uuid4().hex[:6]}"
    ids = []
    for i in range(5):
        body = {**KEEPER, "name": f"Pager {i}", "tags": [tag] if i != 2 else []}
        ids.append((await agents.post(AGENTS, json=body, headers=headers)).json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 1, "tag": tag, "q": "pager", "sort": "updated_at"}
        page = await agents.get(
            AGENTS, params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert page.status_code == 200, page.text
        seen += [a["id"] for a in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    assert seen == [ids[0], ids[1], ids[3], ids[4]]  # oldest first, each once, tagged only


async def test_reads_answer_what_writes_answer_as_documented(agents, user):
    headers = user()
    # Numbers keep their JSON form through jsonb: a big integer, a small float.
    body = {**KEEPER, "temperature": 0.7, "metadata": {"n": 2**70, "x": 1e-7}}
    created = await agents.post(AGENTS, json=body, headers=headers)
    got = await agents.get(f"{AGENTS}/{created.json()['id']}", headers=headers)
    assert got.status_code == 200 and got.headers["content-type"] == "application/json"
    assert got.content == created.content and got.headers["etag"] == '"1"'
    assert b'"n":1180591620717411303424,"x":1e-7' in got.content
    page = (await agents.get(AGENTS, headers=headers)).json()
    assert page == {"items": [got.json()], "next_cursor": None}
    paths = (await agents.get("/openapi.json")).json()["paths"]
    for path, model in ((AGENTS, "AgentPage"), (AGENTS + "/{agent_id}", "AgentOut")):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].endswith(f"/{model}")


async def test_deleted_agents_are_gone_and_say_so(agents, user, outbox_events):
    headers = user()
    agent = (await agents.post(AGENTS, json=KEEPER, headers=headers)).json()
    url = f"{AGENTS}/{agent['id']}"
    assert (await agents.delete(url, headers=headers)).status_code == 204
    assert (await agents.get(url, headers=headers)).status_code == 404
    assert (await agents.delete(url, headers=headers)).status_code == 404
    [event] = await outbox_events("agents.agent.deleted", agent["id"])
    assert event["data"]["agent_version"] == 2


async def test_tools_catalog_lists_schemas(agents, user):
    tools = (await agents.get("/api/v1/tools", headers=user())).json()
    by_id = {t["id"]: t for t in tools}
    assert set(by_id) == {"calculator", "current_time", "knowledge_search", "http_request"}
    assert by_id["calculator"]["parameters"]["required"] == ["expression"]
    assert "allowed_hosts" in by_id["http_request"]["config"]["properties"]

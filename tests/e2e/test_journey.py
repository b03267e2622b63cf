"""A user's whole journey through the gateway, and one trace across the services.

Register; create an ``openai`` provider (a local OpenAI-compatible server) and an agent
with a knowledge base; upload a document and wait until it is indexed; chat with
streaming, so that the agent searches the knowledge base and cites the document; read
the usage; use an API key with the official ``openai`` client; delete the account; and
check in every service's schema that none of the user's rows remain while another
user's data stays. The streamed turn's spans form one trace: gateway -> chat -> NATS
request -> agents.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import openai
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agentmesh.shared.testing.backbone import wait_until

SEARCH_SUBJECT = "agents.rpc.knowledge.search"
FILENAME = "perihelion-handbook.md"
SECRET = "AURORA-7431"
DOCUMENT = f"""# Perihelion handbook

## Launch procedure

The launch code of the Perihelion probe is {SECRET}. Only the flight director reads it
aloud, after the range is clear.

## Recovery

The capsule lands in the northern basin; the recovery team waits at the eastern ridge.
"""

#: The rows each user owns, per table: ``:user`` is the user's id; ``:agents``, ``:kbs``
#: and ``:conversations`` the ids of their agents, knowledge bases and conversations.
OWNED_ROWS = {
    "identity.users": "id = :user",
    "identity.api_keys": "user_id = :user",
    "identity.refresh_token_families": "user_id = :user",
    "identity.memberships": "user_id = :user",
    "agents.agents": "owner_id = :user",
    "agents.agent_versions": "agent_id = ANY(:agents)",
    "agents.providers": "owner_id = :user",
    "agents.mcp_servers": "owner_id = :user",
    "agents.knowledge_bases": "owner_id = :user",
    "agents.documents": "owner_id = :user OR knowledge_base_id = ANY(:kbs)",
    "agents.chunks": "knowledge_base_id = ANY(:kbs)",
    "chat.agent_snapshots": "owner_id = :user OR agent_id = ANY(:agents)",
    "chat.conversations": "user_id = :user",
    "chat.messages": "user_id = :user OR conversation_id = ANY(:conversations)",
    "chat.runs": "user_id = :user",
    "chat.budgets": "user_id = :user",
    "chat.budget_spend": "user_id = :user",
    "identity.oidc_identities": "user_id = :user",
    "identity.oidc_login_codes": "user_id = :user",
    "chat.responses": "user_id = :user",
    "chat.conversation_meta": "user_id = :user",
    "chat.conversation_items": "user_id = :user",
}
#: Checked to be empty after the erasure, though this journey leaves nothing in them (no
#: OpenID Connect sign-in, no Responses API call): their own tests cover the data.
MAY_BE_EMPTY = {
    "identity.oidc_identities",
    "identity.oidc_login_codes",
    "chat.responses",
    "chat.conversation_meta",
    "chat.conversation_items",
}
#: Kept on purpose: the event tables, and the erasure record admins audit (no email).
NOT_USER_DATA = {"outbox", "inbox", "erasures"}


async def poll(check, what: str, timeout: float = 20.0) -> Any:
    """Until ``check()`` returns something truthy; returns it."""
    result: list[Any] = []

    async def done() -> bool:
        result[:] = [await check()]
        return bool(result[0])

    try:
        await wait_until(done, timeout=timeout, interval=0.1)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout}s (last: {result})") from None
    return result[0]


async def stream_turn(
    gateway: httpx.AsyncClient, path: str, content: str, headers: dict[str, str]
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    """Post a message with ``stream: true``; the run id and its ``(event, data)`` list."""
    events: list[tuple[str, dict[str, Any]]] = []
    body = {"content": content, "stream": True}
    async with gateway.stream("POST", path, json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        run_id = response.headers["x-run-id"]
        kind, data = None, []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").strip())
            elif not line and kind is not None:
                events.append((kind, json.loads("\n".join(data))))
                kind, data = None, []
    return run_id, events


class Workspace:
    """One user's provider, knowledge base (with the document, indexed) and agent."""

    def __init__(self, gateway: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.gateway = gateway
        self.headers = headers
        self.agent: dict[str, Any] = {}
        self.kb_id = ""
        self.conversations: list[str] = []

    async def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = await self.gateway.request(method, path, headers=self.headers, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    async def build(self, llm_base_url: str, llm_key: str) -> Workspace:
        config = {"kind": "openai", "name": "Local", "base_url": llm_base_url, "api_key": llm_key}
        provider = await self.call("POST", "/api/v1/providers", 201, json=config)
        assert provider["api_key_last4"] == llm_key[-4:] and "api_key" not in provider
        await self.call(
            "POST",
            "/api/v1/mcp-servers",
            201,
            json={"name": "Tools", "url": "http://127.0.0.1:9/mcp"},
        )
        kb = await self.call("POST", "/api/v1/knowledge-bases", 201, json={"name": "Handbook"})
        self.kb_id = kb["id"]
        documents = f"/api/v1/knowledge-bases/{self.kb_id}/documents"
        document = await self.call(
            "POST", documents, 202, json={"text": DOCUMENT, "filename": FILENAME}
        )
        assert document["status"] in ("pending", "indexing", "ready")

        async def indexed() -> bool:
            state = await self.call("GET", f"{documents}/{document['id']}")
            assert state["status"] != "failed", state
            return state["status"] == "ready"

        await poll(indexed, "document indexed", timeout=60)
        self.agent = await self.call(
            "POST",
            "/api/v1/agents",
            201,
            json={
                "name": "Mission Control",
                "instructions": "Answer from the handbook; cite it.",
                "provider_id": provider["id"],
                "model": "fake-model",
                "knowledge_base_ids": [self.kb_id],
            },
        )

        async def learned() -> bool:  # chat's read-model has the agent (from its events)
            models = await self.call("GET", "/v1/models")
            return any(model["id"] == self.agent["id"] for model in models["data"])

        await poll(learned, "chat learned the agent")
        return self

    async def conversation(self) -> str:
        created = await self.call(
            "POST", "/api/v1/conversations", 201, json={"agent_id": self.agent["id"]}
        )
        self.conversations.append(created["id"])
        return created["id"]

    def ids(self, user_id: str) -> dict[str, Any]:
        return {
            "user": uuid.UUID(user_id),
            "agents": [uuid.UUID(self.agent["id"])],
            "kbs": [uuid.UUID(self.kb_id)],
            "conversations": [uuid.UUID(c) for c in self.conversations],
        }


async def owned_rows(database: AsyncEngine, ids: dict[str, Any]) -> dict[str, int]:
    async with database.connect() as conn:
        return {
            table: await conn.scalar(
                text(
                    f"SELECT count(*) FROM {table} WHERE {where}"
                ),  # constant tables and conditions
                {key: value for key, value in ids.items() if f":{key}" in where},
            )
            for table, where in OWNED_ROWS.items()
        }


async def tables_with_user_columns(database: AsyncEngine) -> set[str]:
    async with database.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT DISTINCT table_schema || '.' || table_name FROM information_schema.columns"
                " WHERE table_schema IN ('identity', 'agents', 'chat')"
                " AND column_name IN ('user_id', 'owner_id')"
            )
        )
        return {name for (name,) in rows if name.split(".")[1] not in NOT_USER_DATA}


def in_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [span for span in spans if span.context.trace_id == trace_id]


def service_of(span: ReadableSpan) -> str:
    return str(span.resource.attributes.get("service.name", ""))


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    """The span's parent, grandparent, ... as far as they were recorded."""
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def assert_one_trace(exporter, run_id: str, conversation_id: str) -> None:
    """gateway server -> chat server -> the run -> NATS request -> agents' consumer."""

    def finished() -> list[ReadableSpan]:
        return list(exporter.get_finished_spans())

    async def complete() -> bool:  # server spans end just after the last byte is sent
        spans = finished()
        runs = [s for s in spans if (s.attributes or {}).get("agentmesh.run_id") == run_id]
        if not runs:
            return False
        ended = {(service_of(s), s.kind) for s in in_trace(spans, runs[0].context.trace_id)}
        return ended >= {
            ("agentmesh-gateway", SpanKind.SERVER),
            ("agentmesh-chat", SpanKind.SERVER),
            ("agentmesh-agents", SpanKind.CONSUMER),
        }

    await poll(complete, "the turn's spans")
    spans = finished()
    (run,) = [s for s in spans if (s.attributes or {}).get("agentmesh.run_id") == run_id]
    assert run.name == "invoke_agent Mission Control"
    assert run.attributes["gen_ai.conversation.id"] == conversation_id
    trace = in_trace(spans, run.context.trace_id)
    by_id = {s.context.span_id: s for s in trace}

    def one(service: str, kind: SpanKind, name_part: str) -> ReadableSpan:
        found = [
            s
            for s in trace
            if service_of(s) == f"agentmesh-{service}" and s.kind == kind and name_part in s.name
        ]
        names = sorted((service_of(s), s.kind.name, s.name) for s in trace)
        assert len(found) == 1, f"{service} {kind.name} '{name_part}' in {names}"
        return found[0]

    gateway_server = one("gateway", SpanKind.SERVER, "POST")
    chat_server = one("chat", SpanKind.SERVER, "/messages")
    request = one("chat", SpanKind.CLIENT, f"{SEARCH_SUBJECT} publish")
    consumer = one("agents", SpanKind.CONSUMER, SEARCH_SUBJECT)
    # The search ran inside agents' consumer span: its SQL is in the trace too.
    assert any(
        service_of(s) == "agentmesh-agents"
        and consumer in ancestors(s, by_id)
        and (s.attributes or {}).get("db.system") == "postgresql"
        for s in trace
    )
    # Each hop's span is the parent of the next: the gateway's request to chat, chat's
    # run (a task of its own), its NATS request (context in the headers), agents' consumer.
    assert consumer.parent.span_id == request.context.span_id
    assert request.parent.span_id == run.context.span_id
    assert run.parent.span_id == chat_server.context.span_id
    assert chat_server.parent.span_id == gateway_server.context.span_id


async def test_user_journey_and_erasure(gateway, signup, fake_llm, span_exporter, database):
    # 1. Register (and log in). Bob stays; an admin watches the erasure.
    alice, bob = await signup("Alice"), await signup("Bob")
    async with database.begin() as conn:  # the first admin comes from the operator CLI
        await conn.execute(
            text("UPDATE identity.users SET roles = ARRAY['admin', 'user'] WHERE id = :id"),
            {"id": uuid.UUID(bob.user_id)},
        )
    bob = await signup.login(bob)

    # 2 and 3. A provider, a knowledge base with the document (indexed), an agent on both.
    mine, theirs = await asyncio.gather(
        Workspace(gateway, alice.headers).build(fake_llm.base_url, fake_llm.api_key),
        Workspace(gateway, bob.headers).build(fake_llm.base_url, fake_llm.api_key),
    )
    for user in (alice, bob):  # budgets make the runs write budget_spend rows as well
        budget = await gateway.put(
            f"/api/v1/budgets/{user.user_id}",
            headers=bob.headers,
            json={"monthly_tokens": 1_000_000},
        )
        assert budget.status_code == 200, budget.text

    # 4. A streamed turn: the agent searches its knowledge base and cites the document.
    span_exporter.clear()
    conversation = await mine.conversation()
    run_id, events = await stream_turn(
        gateway,
        f"/api/v1/conversations/{conversation}/messages",
        "When do we launch, and with which code?",
        alice.headers,
    )
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "run.started" and kinds[-2:] == ["message.completed", "done"], kinds
    (call,) = [data for kind, data in events if kind == "tool.call"]
    assert call["name"] == "knowledge_search" and call["args"]["query"]
    (result,) = [data for kind, data in events if kind == "tool.result"]
    assert result["id"] == call["id"] and result["name"] == "knowledge_search"
    assert SECRET in result["result"] and FILENAME in result["result"]
    completed = dict(events)["message.completed"]
    answer = "".join(data["delta"] for kind, data in events if kind == "message.delta")
    assert completed["content"] == answer
    assert SECRET in answer and FILENAME in answer  # the model quotes the cited passage
    assert completed["tool_calls"][0]["result"] == result["result"]
    assert completed["usage"]["output_tokens"] > 0
    assert dict(events)["done"] == {"status": "completed"}
    # One trace: gateway -> chat -> the run -> NATS request/reply -> agents.
    await assert_one_trace(span_exporter, run_id, conversation)

    # 5. Usage shows the run.
    run = await mine.call("GET", f"/api/v1/runs/{run_id}")
    assert run["status"] == "completed" and run["provider"] == "openai"
    usage = await mine.call("GET", "/api/v1/usage", params={"group_by": "agent"})
    (item,) = usage["items"]
    assert item["key"] == mine.agent["id"] and item["runs"] == 1
    assert item["input_tokens"] == run["input_tokens"] > 0
    assert item["output_tokens"] == run["output_tokens"] > 0
    assert usage["totals"]["total_tokens"] == run["input_tokens"] + run["output_tokens"]

    # 6. An API key with the official openai client: the agent is the model.
    key = await mine.call("POST", "/api/v1/api-keys", 201, json={"name": "sdk"})
    base_url = f"{gateway.base_url}".rstrip("/") + "/v1"
    async with openai.AsyncOpenAI(base_url=base_url, api_key=key["key"]) as client:
        completion = await client.chat.completions.create(
            model=mine.agent["id"], messages=[{"role": "user", "content": "The code?"}]
        )
    reply = completion.choices[0].message.content or ""
    assert SECRET in reply and FILENAME in reply, reply
    assert completion.usage and completion.usage.completion_tokens > 0

    # Bob has a key and a conversation too; his data must outlive Alice's account.
    await theirs.call("POST", "/api/v1/api-keys", 201, json={"name": "bob"})
    await theirs.call(
        "POST",
        f"/api/v1/conversations/{await theirs.conversation()}/messages",
        json={"content": "The code?"},
    )
    alice_ids, bob_ids = mine.ids(alice.user_id), theirs.ids(bob.user_id)
    before = {
        "alice": await owned_rows(database, alice_ids),
        "bob": await owned_rows(database, bob_ids),
    }
    for user, rows in before.items():  # every table checked below really held their data
        assert all(n for table, n in rows.items() if table not in MAY_BE_EMPTY), (user, rows)
    # Every table of the three schemas with a user or owner column is checked.
    assert await tables_with_user_columns(database) <= set(OWNED_ROWS)

    # 7. Delete the account: 202; its token and its API key stop working.
    erasure = await mine.call("DELETE", "/api/v1/users/me", 202)
    assert erasure["status"] == "pending"

    async def token_refused() -> bool:  # once identity.user.deleted reaches the gateway
        response = await gateway.get("/api/v1/agents", headers=alice.headers)
        assert response.status_code in (200, 401), response.text
        return response.status_code == 401

    async def key_refused() -> bool:  # and it evicts the key's cached token
        async with openai.AsyncOpenAI(
            base_url=base_url, api_key=key["key"], max_retries=0
        ) as client:
            try:
                await client.models.list()
            except openai.AuthenticationError:
                return True
        return False

    await poll(token_refused, "the access token refused")
    await poll(key_refused, "the API key refused")

    # 8. Agents and chat erase, say so, and identity removes the account.
    async def erased() -> dict[str, Any] | None:
        state = await gateway.get(f"/api/v1/users/{alice.user_id}/erasure", headers=bob.headers)
        assert state.status_code == 200, state.text
        return state.json() if state.json()["status"] == "completed" else None

    state = await poll(erased, "erasure completed")
    assert state["agents_completed_at"] and state["chat_completed_at"]
    async with database.connect() as conn:
        for schema in ("agents", "chat"):
            sent = await conn.scalar(
                text(
                    f"SELECT count(*) FROM {schema}.outbox"  # constant schemas
                    " WHERE subject = :subject AND subject_id = :user"
                ),
                {"subject": f"{schema}.erasure.completed", "user": alice.user_id},
            )
            assert sent == 1, schema
    after = {
        "alice": await owned_rows(database, alice_ids),
        "bob": await owned_rows(database, bob_ids),
    }
    assert after["alice"] == dict.fromkeys(OWNED_ROWS, 0)
    assert after["bob"] == before["bob"]
    # Bob still works as before.
    assert (await theirs.call("GET", f"/api/v1/agents/{theirs.agent['id']}"))["id"]
    listing = await theirs.call("GET", "/api/v1/conversations?limit=100")
    # Bob is an admin, so the listing may also hold other tests' users' conversations.
    listed = [c["id"] for c in listing["items"]]
    assert set(theirs.conversations) <= set(listed)

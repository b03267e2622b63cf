"""Erasure over real JetStream: identity.user.deleted -> agents gone -> completion event."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import nats
from nats.js.api import DeliverPolicy

from agentmesh.shared.events.contracts import UserDeleted
from agentmesh.shared.events.envelope import Envelope


async def test_user_deleted_erases_agents_once(agents, token_issuer, nats_url):
    user_id = uuid.uuid4()
    headers = token_issuer.headers(user_id)
    for name in ("One", "Two"):
        created = await agents.post("/api/v1/agents", json={"name": name}, headers=headers)
        assert created.status_code == 201
    provider = await agents.post(
        "/api/v1/providers",
        headers=headers,
        json={"kind": "openai", "name": "P", "api_key": "sk-x-1234"},
    )
    assert provider.status_code == 201
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    completions = await js.subscribe("agents.erasure.completed", deliver_policy=DeliverPolicy.NEW)
    try:
        envelope = Envelope.wrap(
            UserDeleted(user_id=user_id, requested_at=datetime.now(UTC)), source="identity"
        )
        for _ in range(2):  # a duplicate publish must change nothing
            await js.publish(
                envelope.type,
                envelope.model_dump_json().encode(),
                headers={"Nats-Msg-Id": envelope.id},
            )
        while True:
            message = await completions.next_msg(timeout=30)
            if json.loads(message.data)["data"]["user_id"] == str(user_id):
                break
        listing = await agents.get("/api/v1/agents", headers=headers)
        assert listing.json()["items"] == []
        providers = await agents.get("/api/v1/providers", headers=headers)
        assert [p["id"] for p in providers.json()["items"]] == ["offline"]
        outbox = agents.app.state.runtime.tables.outbox
        async with agents.app.state.sessionmaker() as session:
            from sqlalchemy import func, select

            count = await session.scalar(
                select(func.count())
                .select_from(outbox)
                .where(
                    outbox.c.subject == "agents.erasure.completed",
                    outbox.c.subject_id == str(user_id),
                )
            )
        assert count == 1
    finally:
        await nc.close()

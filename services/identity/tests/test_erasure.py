"""The erasure saga, with a test consumer standing in for agents and chat."""

from __future__ import annotations

import asyncio
import json

import nats
from nats.js.api import DeliverPolicy
from sqlalchemy import func, select

from agentmesh.identity.api_keys.models import ApiKey
from agentmesh.identity.auth.models import RefreshTokenFamily
from agentmesh.identity.users.models import User
from agentmesh.shared.events.contracts import AgentsErasureCompleted, ChatErasureCompleted
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.testing.backbone import wait_until


async def reply_as(js, payload, source: str) -> None:
    envelope = Envelope.wrap(payload, source=source)
    await js.publish(
        envelope.type, envelope.model_dump_json().encode(), headers={"Nats-Msg-Id": envelope.id}
    )


async def test_erasure_saga_removes_the_account_after_both_services(
    identity, make_account, nats_url
):
    admin = await make_account(admin=True)
    account = await make_account()
    await identity.post("/api/v1/api-keys", json={"name": "k"}, headers=account.headers)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    deleted = await js.subscribe("identity.user.deleted", deliver_policy=DeliverPolicy.NEW)
    try:
        response = await identity.delete("/api/v1/users/me", headers=account.headers)
        assert response.status_code == 202
        assert response.json()["status"] == "pending"

        # Step 1: deactivated at once, every token and key stops working.
        assert (await identity.get("/api/v1/users/me", headers=account.headers)).status_code == 401
        credentials = {"email": account.email, "password": account.password}
        login = await identity.post("/api/v1/auth/login", json=credentials)
        assert login.status_code == 403
        async with identity.app.state.sessionmaker() as session:
            live_keys = await session.scalar(
                select(func.count())
                .select_from(ApiKey)
                .where(ApiKey.user_id == account.id, ApiKey.revoked_at.is_(None))
            )
            live_sessions = await session.scalar(
                select(func.count())
                .select_from(RefreshTokenFamily)
                .where(
                    RefreshTokenFamily.user_id == account.id,
                    RefreshTokenFamily.revoked_at.is_(None),
                )
            )
        assert live_keys == 0 and live_sessions == 0

        # Step 2: identity.user.deleted reaches the other services over JetStream.
        while True:
            message = await deleted.next_msg(timeout=30)
            event = json.loads(message.data)
            if event["data"]["user_id"] == account.id:
                break
        assert event["type"] == "identity.user.deleted"

        # Only one service replied: the account must stay.
        await reply_as(js, AgentsErasureCompleted(user_id=account.id), "agents")
        state_url = f"/api/v1/users/{account.id}/erasure"

        async def agents_recorded() -> bool:
            body = (await identity.get(state_url, headers=admin.headers)).json()
            return body["agents_completed_at"] is not None

        await wait_until(agents_recorded, timeout=30)
        state = (await identity.get(state_url, headers=admin.headers)).json()
        assert state["status"] == "pending" and state["chat_completed_at"] is None
        async with identity.app.state.sessionmaker() as session:
            assert await session.get(User, account.id) is not None

        # Step 3: chat replies (twice: a retry must change nothing) and the row goes.
        await reply_as(js, ChatErasureCompleted(user_id=account.id), "chat")
        await reply_as(js, ChatErasureCompleted(user_id=account.id), "chat")

        async def completed() -> bool:
            body = (await identity.get(state_url, headers=admin.headers)).json()
            return body["status"] == "completed"

        await wait_until(completed, timeout=30)
        await asyncio.sleep(0.3)
        async with identity.app.state.sessionmaker() as session:
            assert await session.get(User, account.id) is None
        again = await identity.delete("/api/v1/users/me", headers=account.headers)
        assert again.status_code == 401
    finally:
        await nc.close()


async def test_erasure_state_is_admin_only_and_404_when_absent(identity, make_account):
    import uuid

    admin = await make_account(admin=True)
    missing = await identity.get(f"/api/v1/users/{uuid.uuid4()}/erasure", headers=admin.headers)
    assert missing.status_code == 404

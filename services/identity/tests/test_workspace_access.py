"""Another service authorizes by workspace with the shared dependency
(``agentmesh.shared.access``): roles, API-key scopes, and prompt revocation through the
memberships bucket that identity keeps and every replica watches."""

from __future__ import annotations

import time
from typing import Annotated

import pytest
from fastapi import APIRouter

from agentmesh.identity.app import create_app
from agentmesh.shared.access import SCOPES, Access, access_to
from agentmesh.shared.runtime import ServiceRuntime
from agentmesh.shared.settings import ServiceSettings
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN, app_client, serve_app

WS = "/api/v1/workspaces"


def probe_app(common):
    """A stand-in service: one read route (viewer, agents:read), one write (member,
    agents:write)."""
    runtime = ServiceRuntime(
        "probe", ServiceSettings(common=common), use_database=False, watch_memberships=True
    )
    router = APIRouter()

    @router.get("/probe/read")
    async def read(access: Annotated[Access, access_to("viewer", "agents:read")]) -> dict:
        return {"workspace_id": str(access.workspace_id), "role": access.role}

    @router.post("/probe/write")
    async def write(access: Annotated[Access, access_to("member", "agents:write")]) -> dict:
        return {"role": access.role}

    return runtime.create_app(title="probe", routers=[router], serve_asyncapi=False)


@pytest.fixture
async def platform(identity_settings):
    app = create_app(identity_settings)
    async with serve_app(app) as base_url, app_client(app) as identity:
        identity.app = app
        common = identity_settings.common.model_copy(
            update={"jwks_url": f"{base_url}/.well-known/jwks.json"}
        )
        probe_service = probe_app(common)
        async with app_client(probe_service) as probe:
            await wait_until(lambda: _ready(probe_service), timeout=30)
            yield identity, probe


async def _ready(app) -> bool:
    return app.state.memberships.ready


async def register(identity, name):
    import uuid

    email = f"{name}-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "correct horse battery staple", "name": name}
    user = (await identity.post("/api/v1/auth/register", json=body)).json()
    tokens = (await identity.post("/api/v1/auth/login", json=body)).json()
    return user["id"], email, {"Authorization": f"Bearer {tokens['access_token']}"}


async def member_of_new_workspace(identity, role):
    _, _, owner = await register(identity, "owner")
    wid = (await identity.post(WS, json={"name": "Team"}, headers=owner)).json()["id"]
    user_id, email, headers = await register(identity, "member")
    invited = await identity.post(
        f"{WS}/{wid}/invitations", json={"email": email, "role": role}, headers=owner
    )
    await identity.post(
        "/api/v1/invitations/accept", json={"token": invited.json()["token"]}, headers=headers
    )
    switched = await identity.post(
        "/api/v1/auth/switch", json={"workspace_id": wid}, headers=headers
    )
    member = {"Authorization": f"Bearer {switched.json()['access_token']}"}
    return wid, user_id, owner, member


async def test_roles_are_enforced_by_another_service(platform):
    identity, probe = platform
    wid, _, _, viewer = await member_of_new_workspace(identity, "viewer")
    read = await probe.get("/probe/read", headers=viewer)
    assert read.status_code == 200 and read.json() == {"workspace_id": wid, "role": "viewer"}
    write = await probe.post("/probe/write", headers=viewer)
    assert write.status_code == 403 and write.json()["type"].endswith("/forbidden")


async def test_a_removed_member_is_refused_within_two_seconds(platform):
    identity, probe = platform
    wid, user_id, owner, member = await member_of_new_workspace(identity, "member")
    await wait_until(lambda: _status(probe, "/probe/write", member, 200), timeout=10, interval=0.01)
    removed = await identity.delete(f"{WS}/{wid}/members/{user_id}", headers=owner)
    assert removed.status_code == 204
    started = time.monotonic()
    await wait_until(lambda: _status(probe, "/probe/read", member, 401), timeout=10, interval=0.01)
    delay = time.monotonic() - started
    refused = await probe.get("/probe/read", headers=member)
    assert refused.json()["type"].endswith("/membership-revoked")
    print(f"revocation reached the other service in {delay * 1000:.0f} ms")


async def test_a_lowered_role_applies_before_the_token_expires(platform):
    identity, probe = platform
    wid, user_id, owner, member = await member_of_new_workspace(identity, "member")
    await wait_until(lambda: _status(probe, "/probe/write", member, 200), timeout=10)
    lowered = await identity.patch(
        f"{WS}/{wid}/members/{user_id}", json={"role": "viewer"}, headers=owner
    )
    assert lowered.status_code == 200
    await wait_until(lambda: _status(probe, "/probe/write", member, 403), timeout=10)
    assert (await probe.get("/probe/read", headers=member)).status_code == 200


async def _status(client, path, headers, expected) -> bool:
    method = client.post if path.endswith("write") else client.get
    return (await method(path, headers=headers)).status_code == expected


@pytest.mark.parametrize(
    ("scopes", "read", "write"),
    [
        ([], 200, 200),
        (["agents:read"], 200, 403),
        (["agents:write"], 200, 200),
        (["chat"], 403, 403),
    ],
)
async def test_api_key_scopes_are_enforced(platform, scopes, read, write):
    identity, probe = platform
    _, _, owner = await register(identity, "keyholder")
    created = await identity.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": scopes}, headers=owner
    )
    assert created.status_code == 201, created.text
    exchanged = await identity.post(
        "/internal/api-keys/exchange",
        json={"key": created.json()["key"]},
        headers={"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"},
    )
    key = {"Authorization": f"Bearer {exchanged.json()['access_token']}"}
    assert (await probe.get("/probe/read", headers=key)).status_code == read
    assert (await probe.post("/probe/write", headers=key)).status_code == write


async def test_scope_vocabulary_and_unknown_scopes(platform):
    identity, _ = platform
    _, _, owner = await register(identity, "scopes")
    listed = await identity.get("/api/v1/api-keys/scopes", headers=owner)
    assert listed.status_code == 200
    assert {s["scope"] for s in listed.json()} == set(SCOPES)
    bad = await identity.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": ["chat", "agents:delete"]}, headers=owner
    )
    assert bad.status_code == 422 and "agents:delete" in bad.text

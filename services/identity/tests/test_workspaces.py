"""Workspaces in identity: personal workspaces, members and roles, invitations, switching
tokens between workspaces, ownership transfer, and API keys bound to a workspace."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import update

from agentmesh.identity.workspaces.models import Invitation
from agentmesh.shared.testing.fixtures import TEST_INTERNAL_TOKEN

WS = "/api/v1/workspaces"
INTERNAL = {"Authorization": f"Bearer {TEST_INTERNAL_TOKEN}"}


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_workspace(identity, owner, name="Research") -> dict:
    response = await identity.post(WS, json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def join(identity, workspace_id, owner, account, role) -> None:
    """Invite ``account`` with ``role`` and accept it (admins are made by the owner)."""
    invited = await identity.post(
        f"{WS}/{workspace_id}/invitations",
        json={"email": account.email, "role": role},
        headers=owner.headers,
    )
    assert invited.status_code == 201, invited.text
    accepted = await identity.post(
        "/api/v1/invitations/accept",
        json={"token": invited.json()["token"]},
        headers=account.headers,
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["role"] == role


async def test_registration_gives_a_personal_workspace_and_tokens_are_bound_to_it(
    identity, make_account, outbox_events
):
    account = await make_account(name="Ada")
    listing = await identity.get(WS, headers=account.headers)
    assert listing.status_code == 200
    [personal] = listing.json()
    assert personal["personal"] is True and personal["role"] == "owner"
    claims = claims_of(account.access_token)
    assert claims["wid"] == personal["id"] and claims["wrole"] == "owner"
    # A personal workspace has its owner's id: other services map data to it without asking.
    assert personal["id"] == claims["sub"]
    assert await outbox_events("identity.workspace.created", personal["id"])
    deleted = await identity.delete(f"{WS}/{personal['id']}", headers=account.headers)
    assert deleted.status_code == 409 and deleted.json()["type"].endswith("/personal-workspace")
    shared = await identity.post(
        f"{WS}/{personal['id']}/invitations",
        json={"email": "friend@example.com", "role": "member"},
        headers=account.headers,
    )
    assert shared.status_code == 409


async def test_create_get_rename_and_another_workspace_is_404(identity, make_account):
    owner, stranger = await make_account(), await make_account()
    created = await new_workspace(identity, owner)
    assert set(created) == {"id", "name", "personal", "role", "created_at"}
    assert created["role"] == "owner" and created["personal"] is False
    renamed = await identity.patch(
        f"{WS}/{created['id']}", json={"name": "R&D"}, headers=owner.headers
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "R&D"
    for method, body in (("GET", None), ("PATCH", {"name": "mine"}), ("DELETE", None)):
        response = await identity.request(
            method, f"{WS}/{created['id']}", json=body, headers=stranger.headers
        )
        assert response.status_code == 404, (method, response.text)
    missing = await identity.get(f"{WS}/{uuid.uuid4()}", headers=owner.headers)
    assert missing.status_code == 404
    null_name = await identity.patch(
        f"{WS}/{created['id']}", json={"name": None}, headers=owner.headers
    )
    assert null_name.status_code == 422


# What each role may do in identity (403 otherwise): rename/delete/transfer need owner;
# members and invitations need admin; reading needs any role.
MATRIX = {
    "read": {"viewer", "member", "admin", "owner"},
    "list_members": {"viewer", "member", "admin", "owner"},
    "invite_member": {"admin", "owner"},
    "invite_admin": {"owner"},
    "list_invitations": {"admin", "owner"},
    "rename": {"owner"},
}


@pytest.mark.parametrize("role", ["viewer", "member", "admin", "owner"])
async def test_role_matrix(identity, make_account, role):
    owner = await make_account()
    workspace = await new_workspace(identity, owner)
    wid = workspace["id"]
    if role == "owner":
        actor = owner
    else:
        actor = await make_account()
        await join(identity, wid, owner, actor, role)
    attempts = {
        "read": ("GET", f"{WS}/{wid}", None),
        "list_members": ("GET", f"{WS}/{wid}/members", None),
        "invite_member": (
            "POST",
            f"{WS}/{wid}/invitations",
            {"email": "x@example.com", "role": "member"},
        ),
        "invite_admin": (
            "POST",
            f"{WS}/{wid}/invitations",
            {"email": "y@example.com", "role": "admin"},
        ),
        "list_invitations": ("GET", f"{WS}/{wid}/invitations", None),
        "rename": ("PATCH", f"{WS}/{wid}", {"name": "Renamed"}),
    }
    for action, (method, path, body) in attempts.items():
        response = await identity.request(method, path, json=body, headers=actor.headers)
        expected = {200, 201} if role in MATRIX[action] else {403}
        assert response.status_code in expected, (role, action, response.text)
        if response.status_code == 403:
            assert response.json()["type"].endswith("/forbidden")


async def test_members_roles_and_leaving(identity, make_account, outbox_events):
    owner, admin, member = await make_account(), await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]
    await join(identity, wid, owner, admin, "admin")
    await join(identity, wid, owner, member, "viewer")
    members = (await identity.get(f"{WS}/{wid}/members", headers=member.headers)).json()
    assert {m["role"] for m in members} == {"owner", "admin", "viewer"}
    assert set(members[0]) == {"user_id", "email", "name", "role", "joined_at"}
    # An admin promotes a viewer to member but cannot make admins or touch the owner.
    up = await identity.patch(
        f"{WS}/{wid}/members/{member.id}", json={"role": "member"}, headers=admin.headers
    )
    assert up.status_code == 200 and up.json()["role"] == "member"
    assert await outbox_events("identity.membership.changed", wid)
    to_admin = await identity.patch(
        f"{WS}/{wid}/members/{member.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert to_admin.status_code == 403
    on_owner = await identity.patch(
        f"{WS}/{wid}/members/{owner.id}", json={"role": "viewer"}, headers=admin.headers
    )
    assert on_owner.status_code == 403
    owner_role = await identity.patch(
        f"{WS}/{wid}/members/{member.id}", json={"role": "owner"}, headers=owner.headers
    )
    assert owner_role.status_code == 422  # ownership moves only by transfer
    # A member cannot remove others; they may leave.
    kick = await identity.delete(f"{WS}/{wid}/members/{admin.id}", headers=member.headers)
    assert kick.status_code == 403
    leave = await identity.delete(f"{WS}/{wid}/members/{member.id}", headers=member.headers)
    assert leave.status_code == 204
    assert await outbox_events("identity.membership.removed", wid)
    gone = await identity.get(f"{WS}/{wid}", headers=member.headers)
    assert gone.status_code == 404
    # The last owner can neither leave nor be removed.
    last = await identity.delete(f"{WS}/{wid}/members/{owner.id}", headers=owner.headers)
    assert last.status_code == 409 and last.json()["type"].endswith("/last-owner")
    removed = await identity.delete(f"{WS}/{wid}/members/{owner.id}", headers=admin.headers)
    assert removed.status_code == 403


async def test_invitations_wrong_email_expired_reused_and_revoked(identity, make_account):
    owner, invitee, other = await make_account(), await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]

    async def invite(email):
        response = await identity.post(
            f"{WS}/{wid}/invitations",
            json={"email": email, "role": "member"},
            headers=owner.headers,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert set(body) >= {"id", "email", "role", "expires_at", "token"}
        return body

    invitation = await invite(invitee.email.replace("@example.com", "@Example.COM"))
    mine = (await identity.get("/api/v1/invitations", headers=invitee.headers)).json()
    assert [i["id"] for i in mine] == [invitation["id"]]
    assert (
        invitation["token"]
        not in (await identity.get(f"{WS}/{wid}/invitations", headers=owner.headers)).text
    )
    wrong = await identity.post(
        f"/api/v1/invitations/{invitation['id']}/accept", headers=other.headers
    )
    assert wrong.status_code == 404
    by_token = await identity.post(
        "/api/v1/invitations/accept", json={"token": invitation["token"]}, headers=other.headers
    )
    assert by_token.status_code == 404
    ok = await identity.post(
        f"/api/v1/invitations/{invitation['id']}/accept", headers=invitee.headers
    )
    assert ok.status_code == 200 and ok.json()["id"] == wid and ok.json()["role"] == "member"
    reused = await identity.post(
        "/api/v1/invitations/accept", json={"token": invitation["token"]}, headers=invitee.headers
    )
    assert reused.status_code == 404

    expired = await invite(other.email)
    async with identity.app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Invitation)
            .where(Invitation.id == uuid.UUID(expired["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    late = await identity.post(f"/api/v1/invitations/{expired['id']}/accept", headers=other.headers)
    assert late.status_code == 404

    revoked = await invite(other.email)
    gone = await identity.delete(f"{WS}/{wid}/invitations/{revoked['id']}", headers=owner.headers)
    assert gone.status_code == 204
    after = await identity.post(
        "/api/v1/invitations/accept", json={"token": revoked["token"]}, headers=other.headers
    )
    assert after.status_code == 404


async def test_switch_binds_tokens_and_later_logins(identity, make_account, login):
    owner, member = await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]
    await join(identity, wid, owner, member, "member")
    switched = await identity.post(
        "/api/v1/auth/switch", json={"workspace_id": wid}, headers=member.headers
    )
    assert switched.status_code == 200, switched.text
    pair = switched.json()
    claims = claims_of(pair["access_token"])
    assert claims["wid"] == wid and claims["wrole"] == "member"
    assert claims["sid"] == claims_of(member.access_token)["sid"]  # the same login session
    refreshed = await identity.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    )
    assert claims_of(refreshed.json()["access_token"])["wid"] == wid
    again = await login(member.email)
    assert claims_of(again["access_token"])["wid"] == wid
    stranger = await identity.post(
        "/api/v1/auth/switch", json={"workspace_id": str(uuid.uuid4())}, headers=member.headers
    )
    assert stranger.status_code == 404
    # Removed from it: the next refresh falls back to the personal workspace.
    await identity.delete(f"{WS}/{wid}/members/{member.id}", headers=owner.headers)
    back = await identity.post(
        "/api/v1/auth/refresh", json={"refresh_token": refreshed.json()["refresh_token"]}
    )
    assert back.status_code == 200
    back_claims = claims_of(back.json()["access_token"])
    assert back_claims["wid"] != wid and back_claims["wrole"] == "owner"


async def test_transfer_ownership_to_an_admin(identity, make_account):
    owner, admin, member = await make_account(), await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]
    await join(identity, wid, owner, admin, "admin")
    await join(identity, wid, owner, member, "member")
    not_admin = await identity.post(
        f"{WS}/{wid}/transfer", json={"user_id": member.id}, headers=owner.headers
    )
    assert not_admin.status_code == 403
    by_admin = await identity.post(
        f"{WS}/{wid}/transfer", json={"user_id": admin.id}, headers=admin.headers
    )
    assert by_admin.status_code == 403
    done = await identity.post(
        f"{WS}/{wid}/transfer", json={"user_id": admin.id}, headers=owner.headers
    )
    assert done.status_code == 204
    roles = {
        m["user_id"]: m["role"]
        for m in (await identity.get(f"{WS}/{wid}/members", headers=owner.headers)).json()
    }
    assert roles[admin.id] == "owner" and roles[owner.id] == "admin"
    # The old owner may now leave; the new one is the last owner.
    assert (
        await identity.delete(f"{WS}/{wid}/members/{owner.id}", headers=owner.headers)
    ).status_code == 204


async def test_delete_workspace_is_owner_only_and_hides_it(identity, make_account, outbox_events):
    owner, admin = await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]
    await join(identity, wid, owner, admin, "admin")
    refused = await identity.delete(f"{WS}/{wid}", headers=admin.headers)
    assert refused.status_code == 403
    accepted = await identity.delete(f"{WS}/{wid}", headers=owner.headers)
    assert accepted.status_code == 202 and accepted.json() == {"id": wid, "status": "deleting"}
    assert await outbox_events("identity.workspace.deleted", wid)
    assert (await identity.get(f"{WS}/{wid}", headers=admin.headers)).status_code == 404
    assert wid not in (await identity.get(WS, headers=owner.headers)).text


async def test_api_keys_belong_to_the_bound_workspace_and_act_with_the_creators_role(
    identity, make_account
):
    owner, member = await make_account(), await make_account()
    wid = (await new_workspace(identity, owner))["id"]
    await join(identity, wid, owner, member, "viewer")
    switched = (
        await identity.post(
            "/api/v1/auth/switch", json={"workspace_id": wid}, headers=member.headers
        )
    ).json()
    created = await identity.post(
        "/api/v1/api-keys",
        json={"name": "ci", "scopes": []},
        headers=bearer(switched["access_token"]),
    )
    assert created.status_code == 201 and created.json()["workspace_id"] == wid
    exchanged = await identity.post(
        "/internal/api-keys/exchange", json={"key": created.json()["key"]}, headers=INTERNAL
    )
    claims = claims_of(exchanged.json()["access_token"])
    assert claims["wid"] == wid and claims["wrole"] == "viewer"
    key_token = bearer(exchanged.json()["access_token"])
    # The key sees only its own workspace.
    assert [w["id"] for w in (await identity.get(WS, headers=key_token)).json()] == [wid]
    personal = claims_of(member.access_token)["wid"]
    assert (await identity.get(f"{WS}/{personal}", headers=key_token)).status_code == 404
    # Promoted: the key follows the creator's role. Removed: the key stops working.
    await identity.patch(
        f"{WS}/{wid}/members/{member.id}", json={"role": "member"}, headers=owner.headers
    )
    again = await identity.post(
        "/internal/api-keys/exchange", json={"key": created.json()["key"]}, headers=INTERNAL
    )
    assert claims_of(again.json()["access_token"])["wrole"] == "member"
    await identity.delete(f"{WS}/{wid}/members/{member.id}", headers=owner.headers)
    dead = await identity.post(
        "/internal/api-keys/exchange", json={"key": created.json()["key"]}, headers=INTERNAL
    )
    assert dead.status_code == 401

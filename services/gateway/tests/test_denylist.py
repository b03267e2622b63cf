"""The gateway refuses deny-listed tokens even with no broadcast for them: logout has none
(only ``identity.session.revoked`` in the deny list), and the token was verified and
cached by the gateway before."""

from __future__ import annotations

from agentmesh.shared.testing.backbone import wait_until


async def test_a_logged_out_sessions_token_is_refused_by_the_gateway(platform, account):
    _, token = await account()
    headers = {"Authorization": f"Bearer {token}"}
    assert (await platform.get("/api/v1/conversations/echo", headers=headers)).status_code == 200
    _, other = await account()
    other_headers = {"Authorization": f"Bearer {other}"}

    logout = await platform.post("/api/v1/auth/logout", headers=headers)
    assert logout.status_code == 204

    async def refused() -> bool:
        answer = await platform.get("/api/v1/conversations/echo", headers=headers)
        return answer.status_code == 401

    await wait_until(refused, timeout=10)
    answer = await platform.get("/api/v1/conversations/echo", headers=headers)
    assert answer.json()["detail"] == "session ended"
    assert (
        await platform.get("/api/v1/conversations/echo", headers=other_headers)
    ).status_code == 200

"""Which account an OpenID Connect sign-in lands in: just-in-time creation, linking by a
verified email, refusals (unverified email, another domain, deactivated), and unlinking."""

from __future__ import annotations

import uuid

from sqlalchemy import update

from agentmesh.identity.users.models import User

PASSWORD = "correct horse battery staple"
ME = "/api/v1/users/me"


def sub() -> str:
    return f"sub-{uuid.uuid4().hex[:12]}"


def bearer(pair: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {pair['access_token']}"}


async def register(client, email: str) -> dict:
    body = {"email": email, "password": PASSWORD, "name": "Pass Word"}
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_a_verified_email_links_an_existing_password_account(browser, oidc_provider):
    address = f"Linked-{uuid.uuid4().hex[:8]}@example.com"
    user = await register(browser.client, address)
    subject = sub()
    # The provider spells the email in another case: still the same account.
    await oidc_provider.set_user(subject, email=address.lower(), email_verified=True)
    response = await browser.sign_in(subject)
    assert response.status_code == 200, response.text
    me = (await browser.client.get(ME, headers=bearer(response.json()))).json()
    assert me["id"] == user["id"] and me["email"] == address
    assert me["has_password"] is True
    assert [i["provider"] for i in me["identities"]] == ["corp"]


async def test_an_unverified_email_never_links_nor_creates(browser, oidc_provider):
    address = f"unverified-{uuid.uuid4().hex[:8]}@example.com"
    user = await register(browser.client, address)
    subject = sub()
    await oidc_provider.set_user(subject, email=address, email_verified=False)
    response = await browser.sign_in(subject)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/email-not-verified")
    # Not created either: a fresh address with no verification claim at all.
    other = sub()
    await oidc_provider.set_user(other, email=f"new-{uuid.uuid4().hex[:8]}@example.com")
    refused = await browser.sign_in(other)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/email-not-verified")
    # The password account is untouched: nothing linked.
    login = await browser.client.post(
        "/api/v1/auth/login", json={"email": address, "password": PASSWORD}
    )
    me = (await browser.client.get(ME, headers=bearer(login.json()))).json()
    assert me["id"] == user["id"] and me["identities"] == []


async def test_a_domain_outside_allowed_domains_is_refused(browser, oidc_provider):
    subject = sub()
    await oidc_provider.set_user(subject, email="someone@example.com", email_verified=True)
    response = await browser.sign_in(subject, name="acme")
    assert response.status_code == 403
    assert response.json()["type"].endswith("/email-domain-not-allowed")
    allowed = sub()
    await oidc_provider.set_user(
        allowed, email=f"dev-{uuid.uuid4().hex[:6]}@ACME.Example.com", email_verified=True
    )
    ok = await browser.sign_in(allowed, name="acme")
    assert ok.status_code == 200, ok.text


async def test_entra_ids_domain_owner_verified_claim_counts_as_verified(browser, oidc_provider):
    subject = sub()
    await oidc_provider.set_user(
        subject, email=f"entra-{uuid.uuid4().hex[:8]}@example.com", xms_edov=True
    )
    assert (await browser.sign_in(subject)).status_code == 200


async def test_a_deactivated_account_cannot_sign_in(browser, oidc_provider):
    subject, address = sub(), f"gone-{uuid.uuid4().hex[:8]}@example.com"
    await oidc_provider.set_user(subject, email=address, email_verified=True)
    assert (await browser.sign_in(subject)).status_code == 200
    async with browser.client.app.state.sessionmaker() as session, session.begin():
        await session.execute(update(User).where(User.email == address).values(is_active=False))
    response = await browser.sign_in(subject)
    assert response.status_code == 403
    assert response.json()["type"].endswith("/account-deactivated")


async def test_unlinking_keeps_at_least_one_way_to_sign_in(browser, oidc_provider):
    subject, address = sub(), f"only-{uuid.uuid4().hex[:8]}@example.com"
    await oidc_provider.set_user(subject, email=address, email_verified=True)
    pair = (await browser.sign_in(subject)).json()
    # The only way in (no password): refused.
    only = await browser.client.delete("/api/v1/users/me/identities/corp", headers=bearer(pair))
    assert only.status_code == 409
    assert only.json()["type"].endswith("/last-sign-in-method")
    # With a second provider linked, one can go.
    await oidc_provider.set_user(
        subject, email=f"dev-{uuid.uuid4().hex[:6]}@acme.example.com", email_verified=True
    )
    # acme finds no identity and a new email: that is another account, not this one.
    other = (await browser.sign_in(subject, name="acme")).json()
    assert (
        (await browser.client.get(ME, headers=bearer(other)))
        .json()["email"]
        .endswith("@acme.example.com")
    )
    unknown = await browser.client.delete("/api/v1/users/me/identities/acme", headers=bearer(pair))
    assert unknown.status_code == 404
    assert unknown.json()["type"].endswith("/identity-not-linked")


async def test_a_password_account_can_unlink_its_provider(browser, oidc_provider):
    address = f"both-{uuid.uuid4().hex[:8]}@example.com"
    await register(browser.client, address)
    subject = sub()
    await oidc_provider.set_user(subject, email=address, email_verified=True)
    pair = (await browser.sign_in(subject)).json()
    gone = await browser.client.delete("/api/v1/users/me/identities/corp", headers=bearer(pair))
    assert gone.status_code == 204
    assert (await browser.client.get(ME, headers=bearer(pair))).json()["identities"] == []

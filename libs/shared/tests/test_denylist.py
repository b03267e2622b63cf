"""The shared verifier and the JetStream KV deny list: entries written to the bucket reach
a watching verifier, which refuses matching tokens even when it had verified (and cached)
them before; a user's entry stops only tokens issued up to it; entries expire."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agentmesh.shared import denylist
from agentmesh.shared.auth import JWTVerifier
from agentmesh.shared.denylist import DenyList
from agentmesh.shared.errors import Unauthorized
from agentmesh.shared.testing.backbone import wait_until
from agentmesh.shared.testing.fixtures import serve_app
from agentmesh.shared.testing.jwt_keys import SigningKey, jwks, make_claims

ISSUER, AUDIENCE = "agentmesh-identity", "agentmesh"
KEY = SigningKey()


@pytest.fixture(scope="module")
async def jwks_url() -> AsyncIterator[str]:
    async def published(request: Request) -> JSONResponse:
        return JSONResponse(jwks([KEY]))

    async with serve_app(Starlette(routes=[Route("/jwks", published)])) as base_url:
        yield f"{base_url}/jwks"


@pytest.fixture
async def watched(jwks_url, nats_url) -> AsyncIterator[tuple[JWTVerifier, object]]:
    """A verifier with a deny list watching the bucket, and a JetStream context."""
    nc = await nats.connect(nats_url)
    deny_list = DenyList()
    deny_list.start(nc.jetstream())
    async with JWTVerifier(jwks_url, ISSUER, AUDIENCE, deny_list=deny_list) as verifier:
        try:
            yield verifier, nc.jetstream()
        finally:
            await deny_list.stop()
            await nc.close()


def token(user_id: uuid.UUID, **claims) -> str:
    return KEY.sign(make_claims(user_id, **claims))


async def refused(verifier: JWTVerifier, raw: str) -> bool:
    try:
        await verifier.verify(raw)
    except Unauthorized:
        return True
    return False


async def test_a_deny_listed_session_and_key_are_refused_even_once_cached(watched):
    verifier, js = watched
    user = uuid.uuid4()
    session, other_session = str(uuid.uuid4()), str(uuid.uuid4())
    by_session, by_other = token(user, sid=session), token(user, sid=other_session)
    by_key = token(user, akid="k" + uuid.uuid4().hex[:8])
    for raw in (by_session, by_other, by_key):
        assert (await verifier.verify(raw)).user_id == user  # verified, now cached

    until = time.time() + 60
    await denylist.deny(js, denylist.session_key(session), until=until)
    akid = (await verifier.verify(by_key)).api_key_id
    await denylist.deny(js, denylist.api_key_key(akid), until=until)
    await wait_until(lambda: refused(verifier, by_session), timeout=10)
    await wait_until(lambda: refused(verifier, by_key), timeout=10)
    with pytest.raises(Unauthorized, match="session ended"):
        await verifier.verify(by_session)
    assert not await refused(verifier, by_other)


async def test_a_users_entry_stops_tokens_issued_up_to_it_and_expires(watched):
    verifier, js = watched
    user = uuid.uuid4()
    now = int(time.time())
    old, later = token(user, iat=now - 10), token(user, iat=now)
    await denylist.deny(js, denylist.user_key(user), until=time.time() + 2, issued_before=now - 5)
    await wait_until(lambda: refused(verifier, old), timeout=10)
    with pytest.raises(Unauthorized, match="account is not active"):
        await verifier.verify(old)
    assert not await refused(verifier, later)  # issued after the deactivation
    await wait_until(lambda: _accepted(verifier, old), timeout=10)  # the entry expired


async def _accepted(verifier: JWTVerifier, raw: str) -> bool:
    return not await refused(verifier, raw)

"""Sentry: with a DSN, unhandled errors of HTTP handlers and consumers reach a local server
that records envelopes, tagged and scrubbed; without one, the SDK is never started."""

from __future__ import annotations

import contextlib
import json
import re
import uuid

import httpx
import pytest
import sentry_sdk
from fastapi import APIRouter, Request

from agentmesh.shared import errortracking, telemetry
from agentmesh.shared.context import request_id_var
from agentmesh.shared.events.inbox import ConsumerPolicy, subscribe_events
from agentmesh.shared.runtime import ServiceRuntime
from agentmesh.shared.settings import CommonSettings, ServiceSettings
from agentmesh.shared.testing.backbone import make_broker, recording_handler
from agentmesh.shared.testing.fixtures import app_client as _app_client
from agentmesh.shared.testing.recorder import Received, recording_server

from .test_event_backbone import Harness, event
from .test_event_backbone import js as js

BEARER = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNlY3JldA"
API_KEY = "am_k1b2c3_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Jh1Gf0"
SECRETS = (BEARER, API_KEY, "cookie-secret-value", "query-secret-value", "hunter2-password")


@pytest.fixture
def sentry():
    """A recording server and the SDK pointed at it; closed after the test."""
    with recording_server() as recorder:
        dsn = f"http://publickey@127.0.0.1:{recorder.port}/1"
        assert errortracking.init("sentryprobe", dsn=dsn)
        try:
            yield recorder
        finally:
            errortracking.close()


def events(received: Received) -> list[dict]:
    """The event items of one envelope (one JSON document per line)."""
    found = []
    for line in received.body.split(b"\n"):
        with_json = line.strip()
        if not with_json.startswith(b"{"):
            continue
        item = json.loads(with_json)
        if "exception" in item or "logentry" in item:
            found.append(item)
    return found


async def first_event(recorder, predicate) -> tuple[dict, bytes]:
    def matches(received: Received) -> bool:
        return received.path == "/api/1/envelope/" and any(predicate(e) for e in events(received))

    received = await recorder.wait_for(matches)
    return next(e for e in events(received) if predicate(e)), received.body


def exception_type(event: dict) -> str | None:
    values = (event.get("exception") or {}).get("values") or []
    return values[-1]["type"] if values else None


@contextlib.asynccontextmanager
async def app_client(app):
    """The shared client, with the app's exceptions answered as the 500 a server sends
    (Starlette re-raises them after the error handler's response)."""
    async with _app_client(app) as client:
        client._transport = httpx.ASGITransport(
            app=client._transport.app, client=("10.9.8.7", 40000), raise_app_exceptions=False
        )
        yield client


def probe_app():
    common = CommonSettings(env="test", log_json=True)
    runtime = ServiceRuntime(
        "sentryprobe", ServiceSettings(common=common), use_database=False, use_broker=False
    )
    router = APIRouter()

    @router.get("/boom/{item_id}")
    async def boom(item_id: int, request: Request) -> dict:
        request.state.principal_user_id = "user-42"  # what the auth dependency records
        password = "hunter2-" + "password"  # noqa: F841 - a local that must not be sent
        raise RuntimeError(f"upstream refused Bearer {BEARER} and key {API_KEY}")

    return runtime.create_app(title="sentryprobe", routers=[router])


async def test_an_unhandled_http_error_arrives_tagged_and_scrubbed(sentry):
    async with app_client(probe_app()) as client:
        response = await client.get(
            "/boom/7?api_key=query-secret-value",
            headers={
                "Authorization": f"Bearer {BEARER}",
                "X-API-Key": API_KEY,
                "Cookie": "session=cookie-secret-value",
                "X-Request-ID": "req-sentry-1",
            },
        )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/problem+json")
    sentry_sdk.flush(timeout=10)
    found, raw = await first_event(sentry, lambda e: exception_type(e) == "RuntimeError")
    tags = found["tags"]
    assert tags["service"] == "sentryprobe"
    assert tags["request_id"] == "req-sentry-1"
    assert re.fullmatch(r"[0-9a-f]{32}", tags["trace_id"]) and set(tags["trace_id"]) != {"0"}
    assert tags["user_id"] == "user-42" and found["user"]["id"] == "user-42"
    assert tags["http_route"] == "/boom/{item_id}"
    # The error is reported once, although the error handler logs it too.
    sentry_sdk.flush(timeout=5)
    reported = [
        e for r in sentry.requests for e in events(r) if exception_type(e) == "RuntimeError"
    ]
    assert len(reported) == 1
    assert b"sys.argv" not in raw and b"sentry-trace" not in raw
    for secret in SECRETS:
        assert secret.encode() not in raw, secret


async def test_a_dead_lettered_event_arrives_with_its_consumer(
    sentry, engine, nats_url, backbone, js
):
    tables, effects, outbox = backbone
    h = Harness(engine, nats_url, tables, effects)
    try:
        # Traced as services trace their brokers, so the consumer's span is current.
        provider = telemetry.tracer_provider_for("sentryprobe")
        broker = make_broker(nats_url, middlewares=[telemetry.broker_middleware(provider)])
        subscribe_events(
            broker,
            service="testsvc",
            purpose=f"effects-{h.durable_suffix}",
            subject="identity.user.updated",
            tables=tables,
            sessionmaker=h.sessionmaker,
            handler=recording_handler(effects),
            policy=ConsumerPolicy(max_deliver=2, backoff_seconds=0.05),
        )
        await broker.start()
        h.brokers.append(broker)
        await h.relay()
        token = request_id_var.set("req-from-the-writer")
        try:
            await h.write(outbox, [[event(uuid.uuid4(), "poison-sentry")]])
        finally:
            request_id_var.reset(token)
        consumer = f"testsvc-effects-{h.durable_suffix}"

        def ours(e: dict) -> bool:
            return exception_type(e) == "ValueError" and e["tags"].get("consumer") == consumer

        found, _ = await first_event(sentry, ours)
    finally:
        await h.close()
    sentry_sdk.flush(timeout=5)
    # Once: the dead-letter log line carries the same exception and is not sent again.
    sent = [e for r in sentry.requests for e in events(r)]
    assert [exception_type(e) for e in sent] == ["ValueError"], sent
    tags = found["tags"]
    assert tags["service"] == "testsvc" and tags["subject"] == "identity.user.updated"
    assert tags["request_id"] == "req-from-the-writer"
    assert re.fullmatch(r"[0-9a-f]{32}", tags["trace_id"])


async def test_without_a_dsn_nothing_is_started_or_sent(monkeypatch):
    monkeypatch.delenv("SENTRY_DSN", raising=False)
    assert not errortracking.init("sentryprobe")
    assert not sentry_sdk.get_client().is_active()
    with recording_server() as recorder:
        async with app_client(probe_app()) as client:
            assert (await client.get("/boom/1")).status_code == 500
        sentry_sdk.flush(timeout=2)
        assert recorder.requests == []


async def test_the_dsn_is_read_from_sentry_dsn(monkeypatch):
    with recording_server() as recorder:
        monkeypatch.setenv("SENTRY_DSN", f"http://publickey@127.0.0.1:{recorder.port}/1")
        try:
            assert errortracking.init("sentryprobe")
            errortracking.capture(ValueError("from the environment"), job="probe")
            sentry_sdk.flush(timeout=10)
            found, _ = await first_event(recorder, lambda e: exception_type(e) == "ValueError")
        finally:
            errortracking.close()
    assert found["tags"]["job"] == "probe" and found["tags"]["service"] == "sentryprobe"

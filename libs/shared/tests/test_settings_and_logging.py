"""Settings refuse placeholder secrets outside development; logs are JSON with context."""

from __future__ import annotations

import base64
import io
import json
import logging
import secrets

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsConfigDict

from agentmesh.shared.context import request_id_var
from agentmesh.shared.logging import ContextFilter
from agentmesh.shared.settings import ServiceSettings


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_")

    signing_key: SecretStr = SecretStr("")


def test_placeholder_secret_is_refused_in_production(monkeypatch):
    monkeypatch.setenv("AGENTMESH_ENV", "production")
    monkeypatch.setenv("DEMO_SIGNING_KEY", "changeme")
    with pytest.raises(ValidationError, match="DEMO_SIGNING_KEY"):
        DemoSettings()
    monkeypatch.delenv("DEMO_SIGNING_KEY")
    with pytest.raises(ValidationError, match="DEMO_SIGNING_KEY"):
        DemoSettings()


def test_placeholder_secret_is_allowed_in_development(monkeypatch):
    monkeypatch.setenv("AGENTMESH_ENV", "development")
    monkeypatch.setenv("DEMO_SIGNING_KEY", "changeme")
    assert DemoSettings().signing_key.get_secret_value() == "changeme"


def test_real_secret_is_accepted_and_shared_settings_are_read(monkeypatch):
    monkeypatch.setenv("AGENTMESH_ENV", "production")
    monkeypatch.setenv(
        "DEMO_SIGNING_KEY", "8f1c0d5e2b7a4f6e9d3c1b0a5e7f2d4c8f1c0d5e2b7a4f6e9d3c1b0a5e7f2d4c"
    )
    monkeypatch.setenv("AGENTMESH_NATS_URL", "nats://nats.internal:4222")
    settings = DemoSettings()
    assert settings.common.nats_url == "nats://nats.internal:4222"
    assert "8f1c0d5e" not in repr(settings)


@pytest.mark.parametrize(
    "weak",
    [
        "8f1c0d5e2b7a4f6e9d3c1b0a5e7f2d4c",  # 32 hex digits: 16 bytes
        "Tr0ub4dor&3-horse",  # a password, not a key
        "x" * 80,  # long but one character
        f"{secrets.token_urlsafe(32)},short-old-key-123",  # every key of a list counts
    ],
)
def test_weak_secret_is_refused_outside_development_with_one_line(monkeypatch, weak):
    monkeypatch.setenv("DEMO_SIGNING_KEY", weak)
    for env in ("production", "test"):
        monkeypatch.setenv("AGENTMESH_ENV", env)
        with pytest.raises(SystemExit) as exited:
            DemoSettings.load()
        reason = str(exited.value.code)
        assert "DEMO_SIGNING_KEY is too weak" in reason and "32 needed" in reason
        assert "\n" not in reason and weak not in reason
    monkeypatch.setenv("AGENTMESH_ENV", "development")
    assert DemoSettings.load().signing_key.get_secret_value() == weak


GENERATORS = [
    lambda: secrets.token_urlsafe(32),
    lambda: secrets.token_hex(32),
    lambda: base64.b64encode(secrets.token_bytes(32)).decode(),  # openssl rand -base64 32
]


def test_any_invalid_setting_exits_with_one_line(monkeypatch):
    monkeypatch.setenv("AGENTMESH_ENV", "development")
    monkeypatch.setenv("DEMO_PORT", "70000")
    with pytest.raises(SystemExit) as exited:
        DemoSettings.load()
    assert str(exited.value.code).startswith("agentmesh: port: Input should be less than")


@pytest.mark.parametrize("make", GENERATORS)
def test_generated_secrets_pass(monkeypatch, make):
    monkeypatch.setenv("AGENTMESH_ENV", "production")
    monkeypatch.setenv("DEMO_SIGNING_KEY", f"{make()},{make()}")
    assert DemoSettings.load().signing_key.get_secret_value()


def test_log_lines_are_json_with_request_and_trace_ids():
    from opentelemetry.sdk.trace import TracerProvider
    from pythonjsonlogger.json import JsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(ContextFilter("demo"))
    log = logging.getLogger("agentmesh.test.json")
    log.addHandler(handler)
    log.propagate = False
    token = request_id_var.set("rid-42")
    tracer = TracerProvider().get_tracer("t")
    try:
        with tracer.start_as_current_span("work") as span:
            log.warning("agent updated", extra={"agent_id": "a1"})
    finally:
        request_id_var.reset(token)
        log.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "agent updated"
    assert line["service"] == "demo"
    assert line["request_id"] == "rid-42"
    assert line["agent_id"] == "a1"
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["span_id"] == format(span.get_span_context().span_id, "016x")

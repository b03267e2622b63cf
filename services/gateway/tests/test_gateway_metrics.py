"""The gateway's metrics: rate-limited requests, breaker state, API-key cache outcomes; and
none of it on the public port."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from .test_gateway import bearer


def value(name: str, **labels: str) -> float:
    text = generate_latest(REGISTRY).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def test_metrics_are_not_served_on_the_public_port(platform):
    response = await platform.get("/metrics")
    assert response.status_code == 404


async def test_limits_breakers_and_the_key_cache_are_counted(platform, account):
    _, token = await account()
    limited = value("agentmesh_gateway_rate_limited_total", group="chat_runs")
    run = "/v1/chat/completions"
    statuses = [
        (await platform.post(run, json={}, headers=bearer(token))).status_code for _ in range(3)
    ]
    assert statuses.count(429) == 1
    assert value("agentmesh_gateway_rate_limited_total", group="chat_runs") == limited + 1

    created = await platform.post("/api/v1/api-keys", json={"name": "m"}, headers=bearer(token))
    key = created.json()["key"]
    misses, hits = (
        value("agentmesh_gateway_api_key_cache_total", result=r) for r in ("miss", "hit")
    )
    for _ in range(3):
        await platform.get("/api/v1/conversations/echo", headers=bearer(key))
    assert value("agentmesh_gateway_api_key_cache_total", result="miss") == misses + 1
    assert value("agentmesh_gateway_api_key_cache_total", result="hit") == hits + 2

    for user in [(await account())[1] for _ in range(3)]:  # chat's own 503s on its run path
        await platform.post("/api/v1/conversations/c1/messages", json={}, headers=bearer(user))
    assert value("agentmesh_gateway_breaker_open", upstream="chat", group="chat_runs") == 1
    assert value("agentmesh_gateway_breaker_open", upstream="chat", group="chat") == 0

"""Prometheus metrics: requests by route template, pool gauges, and where they are served."""

from __future__ import annotations

import re

from fastapi import APIRouter
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.shared.runtime import ServiceRuntime
from agentmesh.shared.settings import CommonSettings, ServiceSettings
from agentmesh.shared.testing.fixtures import app_client


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def probe(name: str, **runtime_options):
    common = CommonSettings(env="test", log_json=True)
    runtime = ServiceRuntime(
        name, ServiceSettings(common=common), use_database=False, use_broker=False
    )
    router = APIRouter()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict:
        return {"id": item_id}

    return runtime.create_app(title=name, routers=[router], **runtime_options)


async def test_requests_are_counted_by_route_template_and_status_class():
    async with app_client(probe("metricsprobe")) as client:
        for item_id in (1, 2, 3):
            assert (await client.get(f"/items/{item_id}")).status_code == 200
        assert (await client.get("/items/not-a-number")).status_code == 422
        assert (await client.get("/nowhere/7")).status_code == 404
        page = await client.get("/metrics")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    labels = {"service": "metricsprobe", "http_request_method": "GET"}
    count = "http_server_request_duration_seconds_count"
    assert (
        sample(page.text, count, http_route="/items/{item_id}", status_class="2xx", **labels) == 3
    )
    assert (
        sample(page.text, count, http_route="/items/{item_id}", status_class="4xx", **labels) == 1
    )
    assert sample(page.text, count, http_route="unmatched", status_class="4xx", **labels) == 1
    # The raw path (with its ids) never becomes a label.
    assert not re.search(r'http_route="/items/\d', page.text)


async def test_an_app_can_keep_metrics_off_its_public_port():
    async with app_client(probe("hiddenprobe", serve_metrics=False)) as client:
        assert (await client.get("/items/1")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404


async def test_one_access_log_line_per_request_without_query_or_headers(caplog):
    caplog.set_level("DEBUG", logger="agentmesh.access")
    async with app_client(probe("accessprobe"), client_ip="10.1.2.3") as client:
        await client.get("/items/5?api_key=s3cret-value", headers={"X-Secret": "hidden-header"})
        await client.get("/health/live")
    records = [r for r in caplog.records if r.name == "agentmesh.access"]
    item = next(r for r in records if r.http_route == "/items/{item_id}")
    assert (item.levelname, item.http_method, item.http_status) == ("INFO", "GET", 200)
    assert item.client_ip == "10.1.2.3" and item.bytes_sent == len(b'{"id":5}')
    assert item.duration_ms >= 0 and item.request_id
    assert item.user_id is None and item.api_key_id is None
    line = str(item.__dict__)
    assert "s3cret-value" not in line and "hidden-header" not in line
    health = next(r for r in records if r.http_route == "/health/live")
    assert health.levelname == "DEBUG"

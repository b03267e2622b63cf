"""A real service's /metrics: its routes and its database pool."""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


async def test_identity_exports_request_and_pool_metrics(identity, make_account):
    account = await make_account()
    assert (await identity.get("/api/v1/users/me", headers=account.headers)).status_code == 200
    page = (await identity.get("/metrics")).text
    requests = samples(page, "http_server_request_duration_seconds_count")
    me = (
        ("http_request_method", "GET"),
        ("http_route", "/api/v1/users/me"),
        ("service", "identity"),
        ("status_class", "2xx"),
    )
    assert requests.get(me, 0) >= 1
    pool = samples(page, "agentmesh_db_pool_connections")
    states = {dict(labels)["state"] for labels in pool if dict(labels)["service"] == "identity"}
    assert states == {"in_use", "idle", "waiting"}
    waits = samples(page, "agentmesh_db_pool_checkout_wait_seconds_count")
    assert waits.get((("service", "identity"),), 0) >= 1


async def test_the_access_log_names_the_principal_never_the_token(identity, make_account, caplog):
    caplog.set_level("INFO", logger="agentmesh.access")
    account = await make_account()
    await identity.get("/api/v1/users/me", headers=account.headers)
    [line] = [
        r
        for r in caplog.records
        if r.name == "agentmesh.access" and r.http_route == "/api/v1/users/me"
    ]
    assert line.user_id == account.id and line.http_status == 200
    assert account.access_token not in str(line.__dict__)

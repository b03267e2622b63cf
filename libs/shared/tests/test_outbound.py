"""The outbound factory: every client it builds refuses each address class, on the first
request and on every redirect, honours the operator's allow-list, and closes what its
caches drop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

from agentmesh.shared import outbound
from agentmesh.shared.outbound import BlockedAddress, ClientCache, OutboundPolicy
from agentmesh.shared.testing.fixtures import serve_app
from agentmesh.shared.tools.netguard import split_entries

# One address of each refused class, and the words of the reason.
ADDRESS_CLASSES = [
    ("127.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("[fc00::1]", "private"),
    ("169.254.10.1", "link-local"),
    ("[fe80::1]", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("169.254.169.254", "metadata"),
    ("[fd00:ec2::254]", "metadata"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("[::ffff:169.254.169.254]", "metadata"),
    ("[::ffff:10.0.0.1]", "private"),
    ("[64:ff9b::7f00:1]", "loopback"),
    ("[64:ff9b::a9fe:a9fe]", "metadata"),
    ("[64:ff9b::a00:1]", "private"),
    ("[64:ff9b:1::1]", "NAT64"),
    ("[2002:7f00:1::]", "loopback"),  # 6to4 of 127.0.0.1
    ("[::7f00:1]", "loopback"),  # IPv4-compatible
]


@pytest.fixture
async def local():
    """A real server on loopback, recording the paths it was asked for."""
    seen: list[str] = []

    async def redirect(request: Request):
        return RedirectResponse(request.query_params["to"], status_code=302)

    app = Starlette(
        routes=[
            Route("/hello", lambda request: PlainTextResponse("hello")),
            Route("/redirect", redirect),
        ]
    )

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await app(scope, receive, send)

    async with serve_app(recording) as base_url:
        yield base_url, httpx.URL(base_url).port, seen


@pytest.fixture
async def fake_dns(monkeypatch):
    """``records[name] = [ip, ...]`` makes ``name`` resolve to those addresses."""
    records: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any):
        if host in records:
            family = {True: socket.AF_INET6, False: socket.AF_INET}
            return [(family[":" in a], socket.SOCK_STREAM, 6, "", (a, port)) for a in records[host]]
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return records


@pytest.mark.parametrize(("host", "reason"), ADDRESS_CLASSES)
async def test_each_address_class_is_refused_by_both_clients(host, reason):
    url = f"http://{host}:8080/x"
    async with outbound.async_client(OutboundPolicy()) as client:
        with pytest.raises(BlockedAddress, match=reason):
            await client.get(url)
    async with outbound.async_client2(OutboundPolicy()) as client2:
        with pytest.raises(BlockedAddress, match=reason):
            await client2.get(url)


@pytest.mark.parametrize("host", ["metadata.example", "rebound.example"])
async def test_a_name_is_refused_by_what_it_resolves_to(fake_dns, host):
    fake_dns["metadata.example"] = ["169.254.169.254"]
    fake_dns["rebound.example"] = ["93.184.215.14", "10.0.0.7"]  # any private one refuses
    async with outbound.async_client(OutboundPolicy()) as client:
        with pytest.raises(BlockedAddress, match=host.replace(".", r"\.")):
            await client.get(f"http://{host}/")


async def test_metadata_stays_refused_even_when_private_networks_are_open():
    policy = OutboundPolicy(allow_private=True, allowed_private=("169.254.0.0/16",))
    for url in ("http://169.254.169.254/latest/", "http://[fd00:ec2::254]/"):
        async with outbound.async_client(policy) as client:
            with pytest.raises(BlockedAddress, match="metadata"):
                await client.get(url)


async def test_the_allow_list_opens_one_port_or_one_range(local):
    base_url, port, seen = local
    by_port = OutboundPolicy(allowed_private=(f"127.0.0.1:{port}",))
    async with outbound.async_client(by_port) as client:
        assert (await client.get(f"{base_url}/hello")).text == "hello"
    async with outbound.async_client2(by_port) as client2:
        assert (await client2.get(f"{base_url}/hello")).text == "hello"
    by_name = OutboundPolicy(allowed_private=(f"localhost:{port}",))
    async with outbound.async_client(by_name) as client:
        assert (await client.get(f"http://localhost:{port}/hello")).text == "hello"
    other_port = OutboundPolicy(allowed_private=(f"127.0.0.1:{port + 1}", "10.0.0.0/8"))
    async with outbound.async_client(other_port) as client:
        with pytest.raises(BlockedAddress, match="loopback"):
            await client.get(f"{base_url}/hello")
    by_range = OutboundPolicy(allowed_private=("127.0.0.0/8",))
    async with outbound.async_client(by_range) as client:
        assert (await client.get(f"{base_url}/hello")).status_code == 200
    assert seen == ["/hello"] * 4


@pytest.mark.parametrize("lib", ["httpx", "httpx2"])
async def test_a_redirect_to_a_private_address_is_refused(local, fake_dns, lib):
    """The first hop is allowed (the allow-list names it); the redirect to another private
    address is checked again and refused before any connection."""
    base_url, port, seen = local
    policy = OutboundPolicy(allowed_private=(f"127.0.0.1:{port}",))
    target = f"http://127.0.0.2:{port}/hello"  # loopback, not allowed
    build = outbound.async_client if lib == "httpx" else outbound.async_client2
    async with build(policy, follow_redirects=True) as client:
        with pytest.raises(BlockedAddress, match=r"127\.0\.0\.2 is a loopback"):
            await client.get(f"{base_url}/redirect?to={target}")
    assert seen == ["/redirect"]


async def test_the_connection_goes_to_the_checked_address(local, fake_dns):
    """A name that resolves to an allowed address is connected to that address, with the
    name in the Host header: a later DNS answer cannot move it."""
    _base_url, port, seen = local
    fake_dns["llm.internal"] = ["127.0.0.1"]
    policy = OutboundPolicy(allowed_private=(f"127.0.0.1:{port}",))
    async with outbound.async_client(policy, keepalive=True) as client:
        response = await client.get(f"http://llm.internal:{port}/hello")
        fake_dns["llm.internal"] = ["10.9.9.9"]  # rebinding: refused on the next request
        with pytest.raises(BlockedAddress, match=r"10\.9\.9\.9 is a private"):
            await client.get(f"http://llm.internal:{port}/hello")
    assert response.text == "hello" and response.request.headers["host"] == f"llm.internal:{port}"
    assert seen == ["/hello"]


def test_allow_list_entries_are_parsed_and_bad_ones_refused():
    assert split_entries("127.0.0.1:11434, 10.0.0.0/8 [::1]:8000") == (
        "127.0.0.1:11434",
        "10.0.0.0/8",
        "[::1]:8000",
    )
    policy = OutboundPolicy(allowed_private=split_entries("127.0.0.1:11434,[::1]:8000"))
    assert policy.endpoints == {("127.0.0.1", 11434), ("::1", 8000)}
    for bad in ("nope", "10.0.0.0/33", "host:0", "host:http"):
        with pytest.raises(ValueError, match=r"neither|CIDR"):
            split_entries(bad)


def test_sync_slots_refuse_every_call():
    with pytest.raises(BlockedAddress, match="synchronous"):
        outbound.refusing_sync_client().get("https://8.8.8.8/")
    with pytest.raises(BlockedAddress, match="synchronous"):
        outbound.refusing_sync_client2().get("https://8.8.8.8/")


# ClientCache: bounded, expiring, and what it drops is closed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _cache(maxsize: int, clock: Clock) -> ClientCache[httpx2.AsyncClient]:
    return ClientCache(maxsize=maxsize, ttl=60, close=lambda c: c.aclose(), timer=clock)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_client_evicted_by_size_or_age_is_closed():
    clock = Clock()
    cache = _cache(2, clock)

    async def take(key: str) -> httpx2.AsyncClient:  # in a task of its own, like a request
        return await asyncio.create_task(_get(cache, key))

    first, second = await take("a"), await take("b")
    third = await take("c")  # over maxsize: "a" goes
    await _settle()
    assert first.is_closed and not second.is_closed and not third.is_closed
    assert await take("b") is second  # a hit
    clock.now = 61  # both expire
    fourth = await take("d")
    await _settle()
    assert second.is_closed and third.is_closed and not fourth.is_closed
    assert len(cache) == 1
    await cache.aclose()
    assert fourth.is_closed


async def _get(cache: ClientCache[httpx2.AsyncClient], key: str) -> httpx2.AsyncClient:
    return cache.get(key, lambda: outbound.async_client2(OutboundPolicy()))


async def test_a_client_in_use_is_closed_only_when_its_task_ends():
    clock = Clock()
    cache = _cache(1, clock)
    release = asyncio.Event()
    taken: list[httpx2.AsyncClient] = []

    async def long_run() -> None:
        taken.append(cache.get("a", lambda: outbound.async_client2(OutboundPolicy())))
        await release.wait()

    run = asyncio.create_task(long_run())
    await _settle()
    await asyncio.create_task(_get(cache, "b"))  # evicts "a" while the run still uses it
    await _settle()
    assert not taken[0].is_closed
    release.set()
    await run
    await _settle()
    assert taken[0].is_closed


async def test_a_long_lived_holder_does_not_pin_a_dropped_client_past_max_hold():
    cache: ClientCache[httpx2.AsyncClient] = ClientCache(
        maxsize=1, ttl=60, close=lambda c: c.aclose(), max_hold=0.01
    )
    held = cache.get("a", lambda: outbound.async_client2(OutboundPolicy()))  # this task holds it
    await asyncio.create_task(_get(cache, "b"))  # "a" is dropped while still held
    await _settle()
    assert not held.is_closed
    await asyncio.sleep(0.05)  # timers fire in order: max_hold's first
    assert held.is_closed

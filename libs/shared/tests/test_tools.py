"""The built-in agent tools and the SSRF guard, against a real HTTP server on loopback.

The server records every request path, so a refusal is shown to happen before any
connection. DNS is faked by patching the loop's ``getaddrinfo`` for made-up names only;
``FakeInternet`` stands in for the route to a public address by forwarding it to the
local server, which lets a test follow a redirect from a "public" host to loopback.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Route

from agentmesh.shared.testing.fixtures import serve_app
from agentmesh.shared.tools.builtin import build_tools, http_request_tool
from agentmesh.shared.tools.netguard import BlockedAddress, check_url

PUBLIC_IP = "93.184.215.14"


@dataclass
class LocalServer:
    base_url: str
    port: int
    seen: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server():
    state = LocalServer(base_url="", port=0)

    async def hello(request: Request):
        return PlainTextResponse("hello world")

    async def echo(request: Request):
        body = (await request.body()).decode()
        return PlainTextResponse(f"{request.method} {request.headers['content-type']} {body}")

    async def big(request: Request):
        async def chunks():
            for _ in range(100):
                yield b"x" * 10_000

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    async def slow(request: Request):
        await state.release.wait()
        return PlainTextResponse("too late")

    async def redirect(request: Request):
        return RedirectResponse(request.query_params["to"], status_code=302)

    app = Starlette(
        routes=[
            Route("/hello", hello),
            Route("/echo", echo, methods=["POST"]),
            Route("/big", big),
            Route("/slow", slow),
            Route("/redirect", redirect),
            Route("/loop", lambda request: RedirectResponse("/loop", status_code=302)),
            Route("/secret", lambda request: PlainTextResponse("secret")),
        ]
    )

    async def recording(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            state.seen.append(scope["path"])
        await app(scope, receive, send)

    async with serve_app(recording) as base_url:
        state.base_url, state.port = base_url, httpx.URL(base_url).port
        yield state
        state.release.set()


@pytest.fixture
async def fake_dns(monkeypatch):
    """``records[name] = [ip, ...]`` makes ``name`` resolve to those addresses."""
    records: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any):
        if host in records:
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
                for address in records[host]
            ]
        return await real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return records


class FakeInternet(httpx.AsyncBaseTransport):
    """Delivers requests for PUBLIC_IP to the local server; everything else goes as is."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[httpx.Request] = []
        self.real = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        url = request.url
        if url.host == PUBLIC_IP:
            url = url.copy_with(host="127.0.0.1", port=self.port)
        forwarded = httpx.Request(
            request.method, url, headers=request.headers, stream=request.stream
        )
        return await self.real.handle_async_request(forwarded)


def tool_named(name: str, **config: Any):
    refs = [{"id": name, "config": config}]
    return build_tools(refs, allow_private_network=True, knowledge_search=None)[0]


# calculator


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("2 + 3 * 4", "14"),
        ("(2 + 3) * 4", "20"),
        ("7 // 2", "3"),
        ("7 % 4", "3"),
        ("2 ** 10", "1024"),
        ("-3 + +5", "2"),
        ("1 / 4", "0.25"),
        ("2 ** -1", "0.5"),
        ("1.5 * 2", "3.0"),
    ],
)
async def test_calculator_computes(expression, expected):
    assert await tool_named("calculator").ainvoke({"expression": expression}) == expected


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("x + 1", "names are not allowed"),
        ("__import__('os').system('id')", "not allowed"),
        ("abs(-1)", "function calls are not allowed"),
        ("(1).real", "attribute access is not allowed"),
        ("9**9**9", "exponents are limited"),
        ("10 ** 5000", "too large"),
        ("2 ** 4096 * 2 ** 4096", "too large"),
        ("1e309", "too large"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("'a' * 3", "only numbers"),
        ("(-8) ** 0.5", "not a real number"),
        ("[1, 2]", "List is not allowed"),
        ("1 +", "not valid arithmetic"),
        ("1+" * 300 + "1", "at most 500 characters"),
    ],
)
async def test_calculator_refuses(expression, reason):
    result = await tool_named("calculator").ainvoke({"expression": expression})
    assert result.startswith("Error:")
    assert reason in result


# current_time


async def test_current_time_in_a_zone_and_by_default():
    tool = tool_named("current_time")
    tokyo = datetime.fromisoformat(await tool.ainvoke({"timezone": "Asia/Tokyo"}))
    assert tokyo.utcoffset() == timedelta(hours=9)
    assert datetime.fromisoformat(await tool.ainvoke({})).utcoffset() == timedelta(0)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd"])
async def test_current_time_refuses_an_unknown_zone(zone):
    result = await tool_named("current_time").ainvoke({"timezone": zone})
    assert result.startswith("Error:")
    assert "Europe/Paris" in result


# http_request against the local server (private network allowed by the platform)


async def test_http_get_and_post(server):
    tool = tool_named("http_request", allowed_hosts=["127.0.0.1"])
    got = await tool.ainvoke({"url": f"{server.base_url}/hello"})
    assert got.splitlines()[:4] == [
        "Status: 200",
        "Content-Type: text/plain; charset=utf-8",
        "Body:",
        "hello world",
    ]
    posted = await tool.ainvoke(
        {"url": f"{server.base_url}/echo", "method": "POST", "body": '{"a": 1}'}
    )
    assert 'POST application/json {"a": 1}' in posted
    assert server.seen == ["/hello", "/echo"]


async def test_http_truncates_at_the_cap(server):
    tool = tool_named("http_request", allowed_hosts=["127.0.0.1"], max_response_bytes=1000)
    result = await tool.ainvoke({"url": f"{server.base_url}/big"})
    body, _, note = result.split("Body:\n", 1)[1].rpartition("\n")
    assert body == "x" * 1000
    assert note == "[truncated: the response was longer than 1000 bytes]"


async def test_http_times_out(server):
    tool = tool_named("http_request", allowed_hosts=["127.0.0.1"], timeout_seconds=0.2)
    result = await tool.ainvoke({"url": f"{server.base_url}/slow"})
    assert result == "Error: the request timed out after 0.2 seconds"


async def test_http_refuses_a_host_not_in_the_allow_list(server):
    tool = tool_named("http_request", allowed_hosts=["example.com", "*.example.org"])
    result = await tool.ainvoke({"url": f"{server.base_url}/hello"})
    assert result == "Error: refused: host '127.0.0.1' is not in the allowed hosts"
    assert server.seen == []


async def test_http_refuses_other_methods_and_too_many_redirects(server):
    tool = tool_named("http_request", allowed_hosts=["127.0.0.1"])
    deleted = await tool.ainvoke({"url": f"{server.base_url}/hello", "method": "DELETE"})
    assert deleted.startswith("Error: invalid arguments: method")
    looped = await tool.ainvoke({"url": f"{server.base_url}/loop"})
    assert looped == "Error: more than 5 redirects"
    assert server.seen == ["/loop"] * 6


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/hello", "127.0.0.1 is a loopback address"),
        ("http://localhost:{port}/hello", "is a loopback address"),
        ("http://[::1]:{port}/hello", "::1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "is the cloud metadata address"),
        ("http://10.0.0.1:{port}/hello", "10.0.0.1 is a private address"),
        ("http://2130706433:{port}/hello", "127.0.0.1 is a loopback address"),
    ],
)
async def test_http_refuses_private_addresses_before_connecting(server, url, reason):
    allowed = ["127.0.0.1", "localhost", "::1", "169.254.169.254", "10.0.0.1", "2130706433"]
    refs = [{"id": "http_request", "config": {"allowed_hosts": allowed}}]
    [tool] = build_tools(refs, allow_private_network=False, knowledge_search=None)
    result = await tool.ainvoke({"url": url.format(port=server.port)})
    assert result.startswith("Error: refused:")
    assert reason in result
    assert server.seen == []


async def test_http_connects_to_the_address_it_checked(server, fake_dns):
    fake_dns["public.example"] = [PUBLIC_IP]
    internet = FakeInternet(server.port)
    tool = http_request_tool(
        {"allowed_hosts": ["public.example"]}, allow_private_network=False, transport=internet
    )
    result = await tool.ainvoke({"url": "http://public.example/hello"})
    assert "hello world" in result
    [sent] = internet.requests
    assert sent.url.host == PUBLIC_IP
    assert sent.headers["host"] == "public.example"


async def test_http_rechecks_a_redirect_to_loopback(server, fake_dns):
    fake_dns["public.example"] = [PUBLIC_IP]
    tool = http_request_tool(
        {"allowed_hosts": ["public.example", "127.0.0.1"]},
        allow_private_network=False,
        transport=FakeInternet(server.port),
    )
    target = f"http://127.0.0.1:{server.port}/secret"
    result = await tool.ainvoke({"url": f"http://public.example/redirect?to={target}"})
    assert result == "Error: refused: 127.0.0.1 is a loopback address"
    assert server.seen == ["/redirect"]


# check_url on its own


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[64:ff9b::7f00:1]/", "loopback"),
        ("http://0x7f.1/", "127.0.0.1 is a loopback address"),
        ("http://017700000001/", "127.0.0.1 is a loopback address"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://192.168.1.1/", "private"),
        ("http://240.0.0.1/", "reserved"),
        ("ftp://8.8.8.8/", "scheme 'ftp' is not allowed"),
        ("http:///path", "no host"),
        ("http://no-such-host.invalid/", "cannot resolve"),
    ],
)
async def test_check_url_refuses(url, reason):
    with pytest.raises(BlockedAddress, match=reason):
        await check_url(url)


async def test_check_url_accepts_public_and_allowed_private_addresses():
    await check_url("https://8.8.8.8/dns-query")
    await check_url("http://[2606:4700:4700::1111]/")
    await check_url("http://127.0.0.1:8080/", allow_private=True)


async def test_check_url_refuses_when_any_resolved_address_is_private(fake_dns):
    fake_dns["mixed.example"] = [PUBLIC_IP, "10.1.2.3"]
    with pytest.raises(BlockedAddress, match=r"mixed\.example: 10\.1\.2\.3 is a private"):
        await check_url("http://mixed.example/")


async def test_check_url_matches_allowed_hosts(fake_dns):
    for name in ("api.example.com", "example.com", "evil-example.com", "deep.api.example.com"):
        fake_dns[name] = [PUBLIC_IP]
    allowed = ["*.example.com", "Example.COM"]
    await check_url("http://API.example.com/", allowed_hosts=allowed)
    await check_url("http://deep.api.example.com/", allowed_hosts=allowed)
    await check_url("https://example.com./", allowed_hosts=allowed)
    with pytest.raises(BlockedAddress, match="not in the allowed hosts"):
        await check_url("http://evil-example.com/", allowed_hosts=allowed)
    with pytest.raises(BlockedAddress, match="not in the allowed hosts"):
        await check_url("http://example.com/", allowed_hosts=["*.example.com"])


# knowledge_search and build_tools


async def test_knowledge_search_formats_hits_for_citation():
    calls: list[tuple[str, int]] = []

    async def search(query: str, top_k: int) -> list[dict[str, Any]]:
        calls.append((query, top_k))
        return [
            {
                "content": " Refunds take 5 days. ",
                "filename": "faq.md",
                "document_id": "d1",
                "score": 0.91234,
            },
            {
                "content": "Ship by courier.",
                "filename": "ops.pdf",
                "document_id": "d2",
                "score": 0.5,
            },
        ]

    [tool] = build_tools(
        [{"id": "knowledge_search"}], allow_private_network=False, knowledge_search=search
    )
    result = await tool.ainvoke({"query": "refunds"})
    assert calls == [("refunds", 5)]
    assert "[1] faq.md (document_id: d1, score: 0.912)\nRefunds take 5 days." in result
    assert "[2] ops.pdf (document_id: d2, score: 0.500)\nShip by courier." in result
    assert result.index("[1]") < result.index("[2]")


async def test_knowledge_search_reports_no_hits_and_failures():
    async def empty(query: str, top_k: int) -> list[dict[str, Any]]:
        return []

    async def broken(query: str, top_k: int) -> list[dict[str, Any]]:
        raise RuntimeError("rpc unavailable")

    empty_tool = build_tools(
        [{"id": "knowledge_search"}], allow_private_network=False, knowledge_search=empty
    )[0]
    assert "No matching passages" in await empty_tool.ainvoke({"query": "x", "top_k": 2})
    assert (await empty_tool.ainvoke({"query": "x", "top_k": 50})).startswith("Error:")
    broken_tool = build_tools(
        [{"id": "knowledge_search"}], allow_private_network=False, knowledge_search=broken
    )[0]
    assert await broken_tool.ainvoke({"query": "x"}) == "Error: RuntimeError: rpc unavailable"


def test_build_tools_uses_catalog_names_and_arguments():
    async def search(query: str, top_k: int) -> list[dict[str, Any]]:
        return []

    ids = ["calculator", "current_time", "http_request", "knowledge_search"]
    refs = [{"id": tool_id, "config": {"allowed_hosts": []}} for tool_id in ids]
    tools = build_tools(refs, allow_private_network=False, knowledge_search=search)
    assert {tool.name: set(tool.args) for tool in tools} == {
        "calculator": {"expression"},
        "current_time": {"timezone"},
        "http_request": {"url", "method", "body"},
        "knowledge_search": {"query", "top_k"},
    }


@pytest.mark.parametrize(
    "refs",
    [
        [{"id": "shell"}],
        [{"id": "calculator"}, {"id": "calculator"}],
        [{"id": "knowledge_search"}],
    ],
)
def test_build_tools_rejects_bad_refs(refs):
    with pytest.raises(ValueError):
        build_tools(refs, allow_private_network=False, knowledge_search=None)

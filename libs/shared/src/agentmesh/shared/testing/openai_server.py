"""A local OpenAI-compatible HTTP server for tests and benchmarks, on 127.0.0.1.

It serves ``GET /v1/models``, ``POST /v1/chat/completions`` (plain and SSE streaming) and
``POST /v1/embeddings``. Provider code talks to it over real HTTP, so retries, timeouts
and broken streams are exercised end to end::

    async with FakeOpenAI(reply="Hello there") as fake:
        model = ChatOpenAI(model="fake", base_url=fake.base_url, api_key=fake.api_key)
        fake.fail_next("429")  # the next attempt gets a rate-limit error
        ...
        assert fake.chat_attempts == 2
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import math
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

FAILURE_KINDS = ("429", "500", "timeout", "malformed", "error_after_tokens")
CHAT_PATH = "/v1/chat/completions"
_CALL_TOOL = re.compile(r"\bcall\s+([A-Za-z0-9_\-]+)", re.IGNORECASE)
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}


@dataclass
class RecordedRequest:
    """One request as the server saw it (the key itself is never stored)."""

    method: str
    path: str
    body: dict[str, Any] | None
    authorized: bool


@dataclass
class FakeOpenAI:
    """OpenAI-compatible server with knobs for latency, replies, tool calls and failures.

    ``reply`` is the answer text (default: ``Fake reply to: <last user message>``).
    ``tool_call`` (``{"name", "arguments"}``) makes every user turn with tools a tool call.
    Without it, a user message saying ``call <tool>`` calls that tool with ``{}``. After a
    ``tool`` message, the answer quotes the tool result. ``requests`` and ``attempts`` (per
    path, failed attempts included) let tests assert what was sent and how often; ``peers``
    over how many connections.
    """

    api_key: str | None = "test-key"
    reply: str | None = None
    ttft_seconds: float = 0.0
    token_delay_seconds: float = 0.0
    timeout_seconds: float = 60.0
    tool_call: dict[str, Any] | None = None
    models: tuple[str, ...] = ("fake-model",)
    requests: list[RecordedRequest] = field(default_factory=list)
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    #: The client addresses (host, port) requests came from: one per connection, so a
    #: client that keeps its connection alive shows one.
    peers: set[tuple[str, int]] = field(default_factory=set)
    base_url: str = field(default="", init=False)
    _failures: collections.deque[str] = field(default_factory=collections.deque, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    _closing: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)

    @property
    def chat_attempts(self) -> int:
        """How many chat completion requests arrived, failed ones included."""
        return self.attempts[CHAT_PATH]

    def fail_next(self, kind: str, times: int = 1) -> None:
        """Make the next ``times`` chat/embedding attempts fail the way ``kind`` says.

        ``429``/``500``: an OpenAI error response. ``timeout``: no answer for
        ``timeout_seconds``. ``malformed``: broken JSON after two good stream chunks.
        ``error_after_tokens``: the connection drops after two tokens.
        """
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {FAILURE_KINDS}")
        self._failures.extend([kind] * times)

    async def start(self) -> str:
        """Listen on a free loopback port; returns the base URL, ending in ``/v1``."""
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post(CHAT_PATH, self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening; requests still held by a ``timeout`` failure are released first."""
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _admit(self, request: web.Request) -> tuple[dict[str, Any], Any]:
        """Record the attempt. Returns the body and either a response to send instead
        (401, 400, 429, 500, timeout), a failure kind for the body, or None."""
        self.attempts[request.path] += 1
        if request.transport is not None:
            self.peers.add(tuple(request.transport.get_extra_info("peername")[:2]))
        authorized = self.api_key is None or (
            request.headers.get("Authorization") == f"Bearer {self.api_key}"
        )
        body = None
        if request.body_exists:
            with contextlib.suppress(ValueError):
                body = await request.json()
        self.requests.append(RecordedRequest(request.method, request.path, body, authorized))
        if not authorized:
            return {}, _error(401, "Incorrect API key provided.", "invalid_api_key")
        if request.method == "GET":
            return {}, None
        if not isinstance(body, dict):
            return {}, _error(400, "The request body is not valid JSON.")
        kind = self._failures.popleft() if self._failures else None
        if kind == "429":
            headers = {"retry-after-ms": "10"}
            return body, _error(429, "Rate limit reached.", "rate_limit_exceeded", headers)
        if kind == "500":
            return body, _error(500, "The server had an error processing your request.")
        if kind == "timeout":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.timeout_seconds)
            return body, web.Response(status=504)
        return body, kind

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), seconds)

    async def _models(self, request: web.Request) -> web.StreamResponse:
        _, refused = await self._admit(request)
        if isinstance(refused, web.StreamResponse):  # a GET gets a response or None
            return refused
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body, outcome = await self._admit(request)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array.")
        text, call = self._answer(messages, body.get("tools") or [])
        model = str(body.get("model", "fake-model"))
        pieces = re.findall(r"\s*\S+", text)
        if call is not None:
            arguments = json.dumps(call["arguments"])
            pieces = [arguments[i : i + 8] for i in range(0, len(arguments), 8)]
        prompt_tokens = sum(_count(json.dumps(m.get("content"))) + 4 for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, model, pieces, call, usage, include_usage, outcome)
        await self._sleep(self.ttft_seconds)
        if outcome == "malformed":
            broken = '{"id": "chatcmpl-broken", "choices": ['
            return web.Response(text=broken, content_type="application/json")
        if outcome == "error_after_tokens" and request.transport is not None:
            request.transport.abort()  # a plain response drops before its body
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [_tool_call(call)]}
        finish = "tool_calls" if call else "stop"
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        completion = {**_envelope(model, "chat.completion"), "choices": [choice], "usage": usage}
        return web.json_response(completion)

    def _answer(self, messages: list[Any], tools: list[Any]) -> tuple[str, dict[str, Any] | None]:
        """The reply text, or a tool call ``{"id", "name", "arguments"}``."""
        last = messages[-1] if isinstance(messages[-1], dict) else {}
        content = _text(last.get("content"))
        if last.get("role") == "tool":
            return f"The tool returned: {content}", None
        names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
        match = _CALL_TOOL.search(content)
        if tools and last.get("role") == "user":
            call_id = "call_" + hashlib.sha256(content.encode()).hexdigest()[:16]
            if self.tool_call is not None:
                arguments = self.tool_call.get("arguments", {})
                return "", {"id": call_id, "name": self.tool_call["name"], "arguments": arguments}
            if match and match.group(1) in names:
                return "", {"id": call_id, "name": match.group(1), "arguments": {}}
        if self.reply is not None:
            return self.reply, None
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        return f"Fake reply to: {_text(users[-1].get('content')) if users else ''}", None

    async def _stream(
        self,
        request: web.Request,
        model: str,
        pieces: list[str],
        call: dict[str, Any] | None,
        usage: dict[str, int],
        include_usage: bool,
        failure: str | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        envelope = _envelope(model, "chat.completion.chunk")
        extra = {"usage": None} if include_usage else {}

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            chunk = {**envelope, "choices": [choice], **extra}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await self._sleep(self.ttft_seconds)
        first: dict[str, Any] = {"role": "assistant", "content": ""}
        if call is not None:
            opening = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["name"], "arguments": ""},
            }
            first = {"role": "assistant", "content": None, "tool_calls": [opening]}
        await send(first)
        cut = min(2, len(pieces)) if failure is not None else -1
        for number, piece in enumerate([*pieces, None]):
            if number == cut and failure == "malformed":
                await response.write(b'data: {"id": "chatcmpl-broken", "choices": [\n\n')
                await response.write(b"data: [DONE]\n\n")
                return response
            if number == cut:  # error_after_tokens: drop the connection mid-stream
                if request.transport is not None:
                    request.transport.abort()
                return response
            if piece is None:
                break
            await self._sleep(self.token_delay_seconds if number else 0)
            if call is not None:
                await send({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            else:
                await send({"content": piece})
        await send({}, "tool_calls" if call else "stop")
        if include_usage:
            chunk = {**envelope, "choices": [], "usage": usage}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body, outcome = await self._admit(request)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        if outcome == "malformed":
            return web.Response(text='{"data": [', content_type="application/json")
        if outcome == "error_after_tokens" and request.transport is not None:
            request.transport.abort()
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str | int) or _is_token_list(raw) else list(raw or [])
        dimensions = int(body.get("dimensions") or 384)
        data = []
        for index, item in enumerate(texts):
            vector = embed_text(item if isinstance(item, str) else json.dumps(item), dimensions)
            encoded: Any = vector
            if body.get("encoding_format") == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_count(str(t)) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        model = body.get("model", "fake-embedding")
        return web.json_response({"object": "list", "data": data, "model": model, "usage": usage})


def embed_text(text: str, dimensions: int = 384) -> list[float]:
    """A deterministic unit vector derived from a hash of ``text`` (not semantic)."""
    values: list[float] = []
    block = 0
    while len(values) < dimensions:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        values.extend((byte - 127.5) / 127.5 for byte in digest)
        block += 1
    norm = math.sqrt(sum(v * v for v in values[:dimensions])) or 1.0
    return [v / norm for v in values[:dimensions]]


def _error(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    error = {"message": message, "type": _ERROR_TYPES.get(status, "server_error")}
    body = {"error": error | {"param": None, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def _envelope(model: str, kind: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = {"name": call["name"], "arguments": json.dumps(call["arguments"])}
    return {"id": call["id"], "type": "function", "function": function}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _count(text: str) -> int:
    return len(re.findall(r"\w+|[^\w\s]", text))


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) for v in value)

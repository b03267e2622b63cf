"""Local stand-ins for the Anthropic, Ollama, Azure OpenAI and Mistral APIs, on 127.0.0.1.

Each speaks its provider's wire format, so the real SDKs (through LangChain) talk to it
over HTTP, as ``FakeOpenAI`` does for OpenAI:

- ``FakeAnthropic``: ``POST /v1/messages``, JSON or SSE (``message_start``,
  ``content_block_*`` with ``text_delta`` / ``input_json_delta``, ``message_delta`` with
  the usage, ``message_stop``); the key in ``x-api-key`` or as a bearer token.
- ``FakeOllama``: ``POST /api/chat``, JSON or NDJSON lines, tool calls with arguments as
  objects, usage as ``prompt_eval_count`` / ``eval_count``.
- ``FakeAzureOpenAI``: ``POST /openai/deployments/{deployment}/chat/completions
  ?api-version=``, the key in ``api-key`` (``FakeOpenAI``'s answers otherwise).
- ``FakeMistral``: ``POST /v1/chat/completions`` with Mistral's streaming (a tool call
  whole in one chunk, its id nine letters and digits; the usage on the last chunk).

All answer as ``FakeOpenAI`` does: ``call <tool>`` in the last user message (with tools
given) calls that tool with ``{}``; after a tool result the answer quotes it; otherwise
``reply``. Asked for structured output in the provider's own form (a forced tool for
Anthropic, ``format`` for Ollama, ``response_format`` for the others) they answer
``structured`` as JSON (Anthropic under ``tool_choice: any``, unless told to call a tool,
calls the last tool given with it). ``fail_next("429")`` makes the next attempts rate-limited;
``requests`` records each body (and ``queries`` each query string) for assertions.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from agentmesh.shared.testing.openai_server import FakeOpenAI, RecordedRequest

_CALL_TOOL = re.compile(r"\bcall\s+([A-Za-z0-9_\-]+)", re.IGNORECASE)


def _words(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text)


@dataclass
class _StandIn:
    api_key: str | None = "test-key"
    reply: str = "Hello from the stand-in"
    #: The JSON document answered when structured output is asked for.
    structured: dict[str, Any] = field(default_factory=lambda: {"answer": "structured"})
    requests: list[RecordedRequest] = field(default_factory=list)
    attempts: int = 0
    base_url: str = field(default="", init=False)
    _failures: collections.deque[str] = field(default_factory=collections.deque, init=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    path = "/"

    def fail_next(self, kind: str = "429", times: int = 1) -> None:
        """Answer the next ``times`` attempts with ``kind``: ``429`` or ``500``."""
        if kind not in ("429", "500"):
            raise ValueError(f"unknown failure kind {kind!r}")
        self._failures.extend([kind] * times)

    async def __aenter__(self) -> Any:
        app = web.Application()
        app.router.add_post(self.path, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _authorized(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == (
            f"Bearer {self.api_key}"
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        body: Any = None
        with contextlib.suppress(ValueError):
            body = await request.json()
        authorized = self._authorized(request)
        self.requests.append(RecordedRequest(request.method, request.path, body, authorized))
        if not authorized:
            return self._error(401, "invalid api key")
        if not isinstance(body, dict):
            return self._error(400, "the body is not a JSON object")
        if self._failures:
            kind = self._failures.popleft()
            return self._error(429 if kind == "429" else 500, f"failure {kind}")
        return await self._answer(request, body)

    def _error(self, status: int, message: str) -> web.Response:
        headers = {"retry-after": "0.01"} if status == 429 else None
        return web.json_response({"error": message}, status=status, headers=headers)

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        raise NotImplementedError

    def _decide(
        self, last_role: str, last_text: str, tool_names: list[str]
    ) -> tuple[str, str | None]:
        """``(text, None)`` or ``("", tool name)``."""
        if last_role == "tool":
            return f"The tool returned: {last_text}", None
        match = _CALL_TOOL.search(last_text)
        if last_role == "user" and match and match.group(1) in tool_names:
            return "", match.group(1)
        return self.reply, None


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict):
                inner = block.get("content", block.get("text", ""))
                parts.append(_text_of(inner) if isinstance(inner, list) else str(inner))
        return " ".join(parts)
    return "" if content is None else str(content)


@dataclass
class FakeAnthropic(_StandIn):
    """Anthropic's Messages API (``base_url`` without ``/v1``, as the SDK takes it)."""

    path = "/v1/messages"

    def _authorized(self, request: web.Request) -> bool:
        """The key in ``x-api-key``, or as a bearer token (the SDK's 2.x sends that)."""
        return self.api_key is None or self.api_key in (
            request.headers.get("x-api-key"),
            request.headers.get("Authorization", "").removeprefix("Bearer "),
        )

    def _error(self, status: int, message: str) -> web.Response:
        kinds = {401: "authentication_error", 429: "rate_limit_error", 500: "api_error"}
        error = {"type": kinds.get(status, "invalid_request_error"), "message": message}
        headers = {"retry-after": "0"} if status == 429 else None
        return web.json_response({"type": "error", "error": error}, status=status, headers=headers)

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        messages = body.get("messages") or [{}]
        last = messages[-1]
        results = (
            [
                b
                for b in last.get("content") or []
                if isinstance(b, dict) and b.get("type") == "tool_result"
            ]
            if isinstance(last.get("content"), list)
            else []
        )
        role = "tool" if results else str(last.get("role"))
        names = [str(t.get("name")) for t in body.get("tools") or []]
        text, tool = self._decide(role, _text_of(last.get("content")), names)
        forced = body.get("tool_choice") or {}
        arguments: dict[str, Any] = {}
        if forced.get("type") == "tool":  # structured output, asked as a forced tool
            text, tool, arguments = "", forced["name"], self.structured
        elif forced.get("type") == "any" and tool is None and names:  # some tool: the last
            text, tool, arguments = "", names[-1], self.structured
        usage_in = sum(len(_text_of(m.get("content")).split()) + 3 for m in messages)
        if tool is not None:
            call_id = "toolu_" + hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:20]
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id,
                "name": tool,
                "input": arguments,
            }
            pieces = _words(json.dumps(arguments))
        else:
            block, pieces = {"type": "text", "text": text}, _words(text)
        stop = "tool_use" if tool is not None else "end_turn"
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": usage_in, "output_tokens": 1},
        }
        if not body.get("stream"):
            usage = {"input_tokens": usage_in, "output_tokens": len(pieces)}
            return web.json_response(
                {**message, "content": [block], "stop_reason": stop, "usage": usage}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(kind: str, data: dict[str, Any]) -> None:
            payload = json.dumps({"type": kind, **data})
            await response.write(f"event: {kind}\ndata: {payload}\n\n".encode())

        await send("message_start", {"message": {**message, "content": []}})
        start = {**block, "input": {}} if tool is not None else {"type": "text", "text": ""}
        await send("content_block_start", {"index": 0, "content_block": start})
        for piece in pieces:
            delta = (
                {"type": "input_json_delta", "partial_json": piece}
                if tool is not None
                else {"type": "text_delta", "text": piece}
            )
            await send("content_block_delta", {"index": 0, "delta": delta})
        await send("content_block_stop", {"index": 0})
        await send(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"input_tokens": usage_in, "output_tokens": len(pieces)},
            },
        )
        await send("message_stop", {})
        await response.write_eof()
        return response


@dataclass
class FakeOllama(_StandIn):
    """Ollama's ``/api/chat`` (NDJSON streaming). No key by default, as Ollama has none."""

    api_key: str | None = None
    path = "/api/chat"

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        messages = body.get("messages") or [{}]
        last = messages[-1]
        names = [str((t.get("function") or {}).get("name")) for t in body.get("tools") or []]
        text, tool = self._decide(str(last.get("role")), _text_of(last.get("content")), names)
        if body.get("format") and tool is None:
            text = json.dumps(self.structured)
        model = body.get("model")
        head = {"model": model, "created_at": "2026-12-03T00:00:00Z"}
        pieces = _words(text) if tool is None else []
        final_message: dict[str, Any] = {"role": "assistant", "content": ""}
        if tool is not None:
            final_message["tool_calls"] = [{"function": {"name": tool, "arguments": {}}}]
        usage = {
            "prompt_eval_count": sum(len(_text_of(m.get("content")).split()) + 3 for m in messages),
            "eval_count": max(len(pieces), 1),
        }
        done = {**head, "done": True, "done_reason": "stop", "total_duration": 1, **usage}
        if not body.get("stream", True):
            message = {**final_message, "content": text}
            return web.json_response({**done, "message": message})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for piece in pieces:
            line = {**head, "message": {"role": "assistant", "content": piece}, "done": False}
            await response.write((json.dumps(line) + "\n").encode())
        if tool is not None:
            line = {**head, "message": final_message, "done": False}
            await response.write((json.dumps(line) + "\n").encode())
        last_line = {**done, "message": {"role": "assistant", "content": ""}}
        await response.write((json.dumps(last_line) + "\n").encode())
        await response.write_eof()
        return response


@dataclass
class FakeAzureOpenAI(FakeOpenAI):
    """Azure OpenAI: ``FakeOpenAI``'s answers at the deployment's path, with the key in
    ``api-key``. ``base_url`` is the resource (no path); ``queries`` records each call's
    query (``api-version``)."""

    azure_key: str = "azure-test-key"
    queries: list[dict[str, str]] = field(default_factory=list)
    deployment_attempts: int = 0

    async def start(self) -> str:
        self.api_key = None  # the parent's bearer check is replaced by ``api-key``
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
        app.router.add_get("/openai/models", self._azure_models)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def _azure_models(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("api-key") != self.azure_key or "api-version" not in request.query:
            return web.json_response(
                {"error": {"code": "401", "message": "Access denied"}}, status=401
            )
        return web.json_response({"object": "list", "data": [{"id": m} for m in self.models]})

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        self.deployment_attempts += 1
        self.queries.append(dict(request.query))
        if request.headers.get("api-key") != self.azure_key:
            self.requests.append(RecordedRequest(request.method, request.path, None, False))
            return web.json_response(
                {"error": {"code": "401", "message": "Access denied"}}, status=401
            )
        if "api-version" not in request.query:
            return web.json_response(
                {"error": {"code": "404", "message": "no api-version"}}, status=404
            )
        return await self._chat(request)


@dataclass
class FakeMistral(_StandIn):
    """Mistral's ``/v1/chat/completions`` (``base_url`` ends in ``/v1``)."""

    path = "/v1/chat/completions"

    async def __aenter__(self) -> FakeMistral:
        await super().__aenter__()
        self.base_url += "/v1"
        return self

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        messages = body.get("messages") or [{}]
        last = messages[-1]
        names = [str((t.get("function") or {}).get("name")) for t in body.get("tools") or []]
        text, tool = self._decide(str(last.get("role")), _text_of(last.get("content")), names)
        if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
            text, tool = json.dumps(self.structured), None
        pieces = _words(text) if tool is None else []
        prompt = sum(len(_text_of(m.get("content")).split()) + 3 for m in messages)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": max(len(pieces), 1),
            "total_tokens": prompt + max(len(pieces), 1),
        }
        calls = None
        if tool is not None:
            digest = hashlib.sha256(json.dumps(messages).encode()).hexdigest()
            call_id = "".join(c for c in digest if c.isalnum())[:9]
            calls = [
                {
                    "id": call_id,
                    "index": 0,
                    "type": "function",
                    "function": {"name": tool, "arguments": "{}"},
                }
            ]
        finish = "tool_calls" if calls else "stop"
        head = {"id": "cmpl-fake", "model": body.get("model"), "created": 0}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text, "tool_calls": calls}
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return web.json_response(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
            chunk = {
                **head,
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send({"role": "assistant", "content": ""})
        for piece in pieces:
            await send({"content": piece})
        if calls:
            await send({"tool_calls": calls})
        await send({"content": ""}, finish, usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

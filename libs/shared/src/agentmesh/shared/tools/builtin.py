"""The built-in agent tools as LangChain tools, built per agent from its tool config.

Arguments and config match the published catalog (agents service, ``tools/catalog.py``).
A tool never raises: every failure comes back as a result starting with ``Error:`` so the
model reads it as the tool's answer and can correct itself.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import logging
import math
import operator
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, Field, ValidationError

from agentmesh.shared import outbound
from agentmesh.shared.tools.configs import HttpRequestConfig
from agentmesh.shared.tools.netguard import BlockedAddress, OutboundPolicy

logger = logging.getLogger("agentmesh.tools")

KnowledgeSearch = Callable[[str, int], Awaitable[list[dict[str, Any]]]]

MAX_EXPRESSION_LENGTH = 500
MAX_EXPONENT = 10_000
MAX_RESULT_BITS = 4096
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class ToolError(ToolException):
    """A failure the model should read, e.g. "division by zero"."""


def _format_error(error: ToolException) -> str:
    return f"Error: {error}"


def _format_validation_error(error: ValidationError | Any) -> str:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'input'}: {item['msg']}"
        for item in error.errors()
    )
    return f"Error: invalid arguments: {problems}"


def _never_raises(coroutine: Callable[..., Awaitable[str]]) -> Callable[..., Awaitable[str]]:
    """Turn any unexpected exception into an ``Error:`` result (tool errors pass through)."""

    @functools.wraps(coroutine)
    async def wrapper(*args: Any, **kwargs: Any) -> str:
        try:
            return await coroutine(*args, **kwargs)
        except ToolException:
            raise
        except Exception as error:
            logger.warning("tool failed", extra={"tool": coroutine.__name__}, exc_info=True)
            raise ToolError(f"{type(error).__name__}: {error}") from error

    return wrapper


def _structured_tool(
    coroutine: Callable[..., Awaitable[str]], name: str, description: str, schema: type
) -> StructuredTool:
    return StructuredTool.from_function(
        coroutine=_never_raises(coroutine),
        name=name,
        description=description,
        args_schema=schema,
        handle_tool_error=_format_error,
        handle_validation_error=_format_validation_error,
    )


# calculator


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _checked(value: int | float | complex) -> int | float:
    if isinstance(value, complex):
        raise ToolError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large")
    if isinstance(value, int) and value.bit_length() > MAX_RESULT_BITS:
        raise ToolError("the result is too large")
    return value


def _power(base: int | float, exponent: int | float) -> int | float:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponents are limited to {MAX_EXPONENT}")
    whole = isinstance(base, int) and isinstance(exponent, int)
    if whole and abs(base) > 1 and exponent * math.log2(abs(base)) > MAX_RESULT_BITS:
        raise ToolError("the result is too large")
    return base**exponent


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {node.value!r}")
        return _checked(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Name):
        raise ToolError(f"names are not allowed (found {node.id!r})")
    if isinstance(node, ast.Call):
        raise ToolError("function calls are not allowed")
    if isinstance(node, ast.Attribute):
        raise ToolError("attribute access is not allowed")
    raise ToolError(f"{type(node).__name__} is not allowed; use numbers, + - * / // % ** and ()")


def evaluate_expression(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely (no eval); raises ``ToolError``."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise ToolError(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise ToolError("the expression is not valid arithmetic") from None
    try:
        return _evaluate(tree)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except (OverflowError, RecursionError):
        raise ToolError("the result is too large") from None


class CalculatorArgs(BaseModel):
    expression: str = Field(max_length=MAX_EXPRESSION_LENGTH, description="e.g. (2 + 3) * 4")


async def _calculator(expression: str) -> str:
    return str(evaluate_expression(expression))


# current_time


class CurrentTimeArgs(BaseModel):
    timezone: str = Field("UTC", description="IANA time zone, e.g. Europe/Paris")


async def _current_time(timezone: str = "UTC") -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"unknown time zone {timezone!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None
    return datetime.now(zone).isoformat()


_SIMPLE_TOOLS: dict[str, tuple[Callable[..., Awaitable[str]], str, type[BaseModel]]] = {
    "calculator": (
        _calculator,
        "Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
        CalculatorArgs,
    ),
    "current_time": (
        _current_time,
        "The current date and time (ISO 8601) in a time zone.",
        CurrentTimeArgs,
    ),
}


# http_request


class HttpRequestArgs(BaseModel):
    url: str = Field(description="An http(s) URL on an allowed host")
    method: Literal["GET", "POST"] = "GET"
    body: str | None = Field(None, max_length=100_000, description="Request body for POST")


def http_request_tool(
    config: dict[str, Any],
    *,
    allow_private_network: bool | OutboundPolicy,
    transport: httpx.AsyncBaseTransport | None = None,
) -> StructuredTool:
    """The ``http_request`` tool for one agent's config (``allowed_hosts``, limits;
    ``configs.HttpRequestConfig``, clamped into its bounds).

    ``allow_private_network`` (a flag or the operator's ``OutboundPolicy``) is a platform
    setting, never agent config. The client comes from ``outbound``. ``transport`` is
    the connection layer under the guard (tests substitute a fake network).
    """
    # Clamped into the catalog's bounds: a config stored before they were enforced (an old
    # agent version) gets no longer timeout or bigger response than a new one may ask for.
    settings = HttpRequestConfig.for_run(config)
    allowed_hosts = settings.allowed_hosts
    timeout_seconds = settings.timeout_seconds
    max_bytes = settings.max_response_bytes

    async def http_request(url: str, method: str = "GET", body: str | None = None) -> str:
        method = method.upper()
        if method not in ("GET", "POST"):
            raise ToolError("only GET and POST are allowed")
        client = outbound.async_client(
            allow_private_network,
            allowed_hosts=allowed_hosts,
            inner=transport,
            timeout=timeout_seconds,
        )
        try:
            async with asyncio.timeout(timeout_seconds), client:
                return await _fetch(client, method, url, body, max_bytes)
        except BlockedAddress as error:
            raise ToolError(f"refused: {error}") from None
        except (TimeoutError, httpx.TimeoutException):
            raise ToolError(f"the request timed out after {timeout_seconds:g} seconds") from None
        except httpx.HTTPError as error:
            raise ToolError(f"the request failed: {error}") from None

    return _structured_tool(
        http_request,
        "http_request",
        "GET or POST to an allow-listed host; never private or loopback addresses. "
        "Returns the status, content type and (possibly truncated) body.",
        HttpRequestArgs,
    )


async def _fetch(
    client: httpx.AsyncClient, method: str, url: str, body: str | None, max_bytes: int
) -> str:
    content = body.encode() if method == "POST" and body is not None else None
    # Identity encoding: the size cap then bounds what is decompressed too.
    headers = {"accept-encoding": "identity"}
    if content is not None:
        headers["content-type"] = "application/json" if _is_json(body) else "text/plain"
    request = client.build_request(method, url, content=content, headers=headers)
    for _hop in range(MAX_REDIRECTS + 1):
        response = await client.send(request, stream=True)
        try:
            if response.status_code not in REDIRECT_STATUSES or "location" not in response.headers:
                return await _describe(response, max_bytes)
        finally:
            await response.aclose()
        next_url = response.url.join(response.headers["location"])
        if response.status_code == 303 or (response.status_code in (301, 302) and method == "POST"):
            method, content = "GET", None
            headers.pop("content-type", None)
        request = client.build_request(method, next_url, content=content, headers=headers)
    raise ToolError(f"more than {MAX_REDIRECTS} redirects")


async def _describe(response: httpx.Response, max_bytes: int) -> str:
    received = bytearray()
    truncated = False
    async for chunk in response.aiter_bytes():
        received.extend(chunk)
        if len(received) > max_bytes:
            del received[max_bytes:]
            truncated = True
            break
    text = bytes(received).decode(response.encoding or "utf-8", errors="replace")
    lines = [
        f"Status: {response.status_code}",
        f"Content-Type: {response.headers.get('content-type', 'unknown')}",
        "Body:",
        text,
    ]
    if truncated:
        lines.append(f"[truncated: the response was longer than {max_bytes} bytes]")
    return "\n".join(lines)


def _is_json(text: str | None) -> bool:
    try:
        json.loads(text or "")
    except ValueError:
        return False
    return True


# knowledge_search


class KnowledgeSearchArgs(BaseModel):
    query: str = Field(max_length=2000, description="What to look for")
    top_k: int = Field(5, ge=1, le=20, description="How many passages to return")


def knowledge_search_tool(search: KnowledgeSearch) -> StructuredTool:
    """The ``knowledge_search`` tool over ``search(query, top_k) -> [hit, ...]``.

    A hit is a dict with ``content``, ``filename``, ``document_id`` and ``score``.
    """

    async def knowledge_search(query: str, top_k: int = 5) -> str:
        hits = await search(query, top_k)
        if not hits:
            return "No matching passages found in the knowledge bases."
        blocks = []
        for number, hit in enumerate(hits, start=1):
            score = hit.get("score")
            score_text = f"{score:.3f}" if isinstance(score, int | float) else "n/a"
            blocks.append(
                f"[{number}] {hit.get('filename') or 'unknown file'} "
                f"(document_id: {hit.get('document_id')}, score: {score_text})\n"
                f"{str(hit.get('content', '')).strip()}"
            )
        return "Cite passages by number and filename.\n\n" + "\n\n".join(blocks)

    return _structured_tool(
        knowledge_search,
        "knowledge_search",
        "Search the agent's knowledge bases; returns numbered passages with their sources.",
        KnowledgeSearchArgs,
    )


def build_tools(
    tool_refs: list[dict[str, Any]],
    *,
    allow_private_network: bool | OutboundPolicy,
    knowledge_search: KnowledgeSearch | None,
) -> list[BaseTool]:
    """LangChain tools for an agent's ``[{"id": ..., "config": {...}}, ...]`` list.

    Raises ``ValueError`` for an unknown or repeated id, or for ``knowledge_search`` when
    no search callable is given.
    """
    tools: list[BaseTool] = []
    for ref in tool_refs:
        tool_id, config = ref.get("id"), ref.get("config") or {}
        if any(tool.name == tool_id for tool in tools):
            raise ValueError(f"tool {tool_id!r} is listed twice")
        if tool_id in _SIMPLE_TOOLS:
            coroutine, description, schema = _SIMPLE_TOOLS[tool_id]
            tools.append(_structured_tool(coroutine, tool_id, description, schema))
        elif tool_id == "http_request":
            tools.append(http_request_tool(config, allow_private_network=allow_private_network))
        elif tool_id == "knowledge_search":
            if knowledge_search is None:
                raise ValueError("knowledge_search needs a search function")
            tools.append(knowledge_search_tool(knowledge_search))
        else:
            raise ValueError(f"unknown tool {tool_id!r}")
    return tools

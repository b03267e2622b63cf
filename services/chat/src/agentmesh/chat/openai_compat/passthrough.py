"""The lean run of ``/v1/chat/completions`` and of a conversation's turn: the provider's
chunks, without LangChain.

The common case (an agent on an OpenAI-compatible provider, no tools of its own or the
caller's, no knowledge bases, no ``response_format``, a plain text history; in a
conversation, no title to name and no summary to make, which the agent's LangChain model
does) needs no agent loop: one model call, streamed. Through LangChain, each chunk of it
became an openai SDK model (``construct_type``), then an ``AIMessageChunk`` merged into
the whole answer (``add_ai_message_chunks``): most of chat's own CPU per stream
(bench/model_path.py ``--profile``). Here the provider's SSE lines are read as JSON and
their text goes on at once. Everything around the model call is the executor's: the
run's span, the ``RunPlan.recorded`` gate before any output, the retry policy
(``stream_with_retry``), error classification, the run's row, usage and spend
(``_finish``: the answer's message too, in a conversation), and the guarded outbound
client. Any other agent (tools, knowledge, another provider kind) or turn (a title or a
summary to make) runs the full LangChain loop, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx2
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agentmesh.chat.llm.resolve import check_provider_address
from agentmesh.chat.llm.streaming import (
    ModelCallFailed,
    StreamInterrupted,
    _provider_message,
    stream_with_retry,
)
from agentmesh.chat.runs.executor import (
    RunExecutor,
    RunNotRecorded,
    RunOutcome,
    RunPlan,
    price_outcome,
    unexpected_problem,
)
from agentmesh.chat.runs.hub import RunChannel
from agentmesh.chat.runs.memory import prompt_for
from agentmesh.shared import outbound
from agentmesh.shared.outbound import ClientCache, OutboundPolicy

logger = logging.getLogger("agentmesh.chat.runs")
_ROLES = {SystemMessage: "system", HumanMessage: "user", AIMessage: "assistant"}
#: How long the end of a response is waited for after ``[DONE]`` (see ``_drain``).
DRAIN_SECONDS = 0.1


async def _close(client: httpx2.AsyncClient) -> None:
    await client.aclose()


#: One guarded, pooled client per outbound policy (the policy is the operator's, fixed
#: per replica): every request's address is checked, connections are kept per host.
CLIENTS: ClientCache[httpx2.AsyncClient] = ClientCache(maxsize=4, ttl=3600, close=_close)


def applies(plan: RunPlan) -> bool:
    """Whether ``plan`` is the common case this module runs (see the module's text)."""
    config = plan.config
    return (
        plan.client_tools is None
        and plan.response_format is None
        and plan.resume is None
        and plan.title_seed is None  # titled by the agent's LangChain model after the run
        and not (config.get("memory") or {}).get("summarize")  # likewise older turns
        and bool(config.get("provider_id"))
        and not config.get("tools")
        and not config.get("knowledge_base_ids")
        and not config.get("fallbacks")  # tried in order by the executor's loop
        and all(_plain(message) for message in plan.history)
    )


def _plain(message: BaseMessage) -> bool:
    return (
        type(message) in _ROLES
        and isinstance(message.content, str)
        and not getattr(message, "tool_calls", None)
    )


def start(executor: RunExecutor, plan: RunPlan) -> RunChannel:
    """As ``RunExecutor.start``, the run being this module's when it ``applies`` and the
    provider is OpenAI-compatible (known once its credentials are read), else the
    executor's."""
    if not applies(plan):
        return executor.start(plan)
    channel = executor.hub.open(plan.run_id)
    channel.recorded = plan.recorded
    channel.task = asyncio.create_task(
        executor._traced_run(plan, channel, lambda: _run(executor, plan, channel)),
        name=f"run-{plan.run_id}",
    )
    return channel


@dataclass(slots=True)
class _Chunk:
    """What ``stream_with_retry`` reads of a chunk, plus what the run keeps of it."""

    content: str = ""
    tool_call_chunks: tuple[()] = ()
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


class ProviderError(Exception):
    """An error answer of the provider, shaped as ``classify_error`` reads SDK errors."""

    def __init__(self, status_code: int | None, body: Any, response: Any = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code, self.body, self.response = status_code, body, response


@dataclass
class _Upstream:
    """One streamed ``POST {base_url}/chat/completions`` per ``astream`` call."""

    client: httpx2.AsyncClient
    url: str
    headers: dict[str, str]
    payload: dict[str, Any]
    timeout: float
    model: str = field(default="")
    #: httpcore's ``trace`` extension: the run's row begins once the request is sent.
    trace: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

    def astream(self, messages: Any, config: Any = None) -> AsyncIterator[_Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[_Chunk]:
        extensions = {"trace": self.trace} if self.trace is not None else None
        async with self.client.stream(
            "POST",
            self.url,
            json=self.payload,
            headers=self.headers,
            timeout=self.timeout,
            extensions=extensions,
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise ProviderError(response.status_code, body, response)
            lines = response.aiter_lines()
            async for line in lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    await _drain(lines)
                    return
                body = json.loads(data)
                if body.get("error"):  # an error event inside the stream, as the SDK says it
                    message = _provider_message(ProviderError(None, body))
                    raise ModelCallFailed(f"The model provider reported an error: {message}")
                choice = (body.get("choices") or [{}])[0]
                delta = choice.get("delta") or {}
                yield _Chunk(
                    delta.get("content") or "", (), choice.get("finish_reason"), body.get("usage")
                )


async def _drain(lines: AsyncIterator[str]) -> None:
    """Read what follows ``[DONE]`` (the end of the chunked body, normally there already):
    a response left unread closes its connection, and the next run would open one. As the
    openai SDK does, for at most ``DRAIN_SECONDS``; a server that keeps the stream open
    longer loses the connection, not the answer."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in lines:
                pass


def _payload(
    model: str, messages: list[BaseMessage], temperature: Any, max_tokens: int | None
) -> dict[str, Any]:
    """The request LangChain's ``ChatOpenAI`` (``stream_usage=True``) sends for it."""
    system = "developer" if model[:1] == "o" and model[1:2].isdigit() else "system"
    payload: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [
            {"role": system if type(m) is SystemMessage else _ROLES[type(m)], "content": m.content}
            for m in messages
        ],
    }
    if temperature is not None:
        payload["temperature"] = temperature
    if max_tokens is not None:
        payload["max_completion_tokens"] = max_tokens
    return payload


def _record(plan: RunPlan) -> None:
    """Begin the run's row, if the model request has not already (``runs.recording``)."""
    if plan.recorded is not None:
        plan.recorded.start()


async def _run(executor: RunExecutor, plan: RunPlan, channel: RunChannel) -> RunOutcome:
    settings = executor.state.settings
    creds: dict[str, Any] = {}
    failure: BaseException | None = None
    try:
        creds = await executor.state.agents_client.credentials(
            plan.user_id, uuid.UUID(str(plan.config["provider_id"])), workspace_id=plan.workspace_id
        )
    except (Exception, asyncio.CancelledError) as exc:  # the run still ends, failed, below
        failure = exc
    if failure is None and (creds.get("kind", "openai") != "openai" or not creds.get("base_url")):
        _record(plan)
        return await executor._run(plan, channel)  # the full loop: its own provider kind
    outcome = RunOutcome()
    started = time.perf_counter()
    model_name = plan.config.get("model") or "offline"
    announced = asyncio.ensure_future(executor._announce(plan, channel, model_name))
    try:
        if failure is not None:  # a provider gone, agents unreachable: as the full loop does
            raise failure
        await check_provider_address(creds["base_url"], settings.outbound_policy)
        await _stream(executor, plan, channel, creds, outcome, started, announced)
    except asyncio.CancelledError:
        outcome.status = "cancelled"
    except RunNotRecorded:
        return await executor._not_recorded(plan, channel, outcome)
    except (ModelCallFailed, StreamInterrupted) as exc:
        outcome.status, outcome.error = "failed", exc.problem()
    except Exception as exc:  # a run must always end with a recorded state
        logger.exception("run failed", extra={"run_id": str(plan.run_id)}, exc_info=exc)
        outcome.status, outcome.error = "failed", unexpected_problem(exc)
    _record(plan)  # whether or not the model request went out
    try:  # the row must be there before the run can be finished on it
        await asyncio.shield(announced)
    except RunNotRecorded:
        return await executor._not_recorded(plan, channel, outcome)
    latency_ms = (time.perf_counter() - started) * 1000
    price_outcome(settings.prices, model_name, outcome)
    await asyncio.shield(executor._finish(plan, channel, outcome, model_name, "openai", latency_ms))
    return outcome


async def _stream(
    executor: RunExecutor,
    plan: RunPlan,
    channel: RunChannel,
    creds: dict[str, Any],
    outcome: RunOutcome,
    started: float,
    announced: asyncio.Future[None],
) -> None:
    settings = executor.state.settings
    config = plan.config
    policy: OutboundPolicy = settings.outbound_policy
    client = CLIENTS.get(policy, lambda: outbound.async_client2(policy, keepalive=True))
    model = str(config.get("model") or "")
    temperature = plan.temperature if plan.temperature is not None else config.get("temperature")
    messages = await prompt_for(executor.state, plan, None)  # no model: no new summary made
    upstream = _Upstream(
        client,
        f"{str(creds['base_url']).rstrip('/')}/chat/completions",
        {"Authorization": f"Bearer {creds.get('api_key') or 'unused'}"},
        _payload(model, messages, temperature, plan.max_tokens or config.get("max_output_tokens")),
        settings.model_timeout_seconds,
        trace=plan.recorded.trace if plan.recorded is not None else None,
    )
    ready = False
    stream = stream_with_retry(cast(Any, upstream), [], attempts=settings.model_attempts)
    async for chunk in cast(AsyncIterator[_Chunk], stream):
        if not ready:  # raises RunNotRecorded before anything is shown
            _record(plan)  # begun already, once the request was sent
            await asyncio.shield(announced)
            ready = True
        if chunk.finish_reason:
            outcome.finish_reason = chunk.finish_reason
        if chunk.usage:
            outcome.input_tokens += int(chunk.usage.get("prompt_tokens") or 0)
            outcome.output_tokens += int(chunk.usage.get("completion_tokens") or 0)
        if chunk.content:
            if outcome.ttft_ms is None:
                outcome.ttft_ms = (time.perf_counter() - started) * 1000
            outcome.content += chunk.content
            await executor.hub.emit(channel, "message.delta", {"delta": chunk.content})

"""One run: resolve the model, build the prompt, stream, call tools, record usage.

A run is an asyncio task of its own, not of the request that started it: a client that
disconnects does not stop it, and its answer is saved. ``POST /runs/{id}/cancel`` cancels
the task; what was produced is kept, marked cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage
from opentelemetry import trace

from agentmesh.chat.llm.fallbacks import Candidate, ModelChain, Served, candidates
from agentmesh.chat.llm.resolve import check_provider_address, resolve_chat_model, tool_choice_for
from agentmesh.chat.llm.streaming import ModelCallFailed, StreamInterrupted
from agentmesh.chat.llm.structured import with_response_format
from agentmesh.chat.mcp_tools import mcp_tools
from agentmesh.chat.runs import approvals
from agentmesh.chat.runs.hub import RunChannel, RunHub
from agentmesh.chat.runs.memory import prompt_for
from agentmesh.chat.runs.recording import Recording
from agentmesh.chat.runs.repository import (
    FinishedRun,
    RunAlreadyEnded,
    finish_run,
    interrupted_problem,
    not_recorded_problem,
)
from agentmesh.chat.runs.retrieval import Knowledge, Search, ground, tool_search
from agentmesh.chat.state import ChatState
from agentmesh.shared.errors import problem_type
from agentmesh.shared.tools.builtin import build_tools

logger = logging.getLogger("agentmesh.chat.runs")


@dataclass
class RunPlan:
    """Everything a run needs, gathered by the request that starts it."""

    run_id: uuid.UUID
    #: The agent's workspace: its providers, MCP servers and knowledge bases are asked for
    #: there; the run and its usage belong to it.
    workspace_id: uuid.UUID
    user_id: uuid.UUID
    agent_id: uuid.UUID
    agent_version: int
    config: dict[str, Any]
    history: list[BaseMessage]
    conversation_id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = None
    summary: str | None = None
    #: The conversation's ``title``, ``variables`` and ``timezone``, for the instructions'
    #: template (runs/templating.py).
    prompt_vars: dict[str, Any] | None = None
    reserved_tokens: int = 0
    temperature: float | None = None
    max_tokens: int | None = None
    #: The first question of a conversation whose title is to be generated.
    title_seed: str | None = None
    #: OpenAI-format tools given by a /v1/chat/completions caller: returned, not run.
    client_tools: list[dict[str, Any]] | None = None
    #: Their ``tool_choice``, in OpenAI's form.
    tool_choice: str | dict[str, Any] | None = None
    #: A Chat Completions ``response_format`` (``json_object`` / ``json_schema``) for the model.
    response_format: dict[str, Any] | None = None
    #: The commit of the run's row (and user message), when the request did not wait for
    #: it: the model call starts at once, and nothing reaches the client (``run.started``
    #: included) until this has succeeded. A failure fails the run before any output.
    #: The lean path begins it once the model request is sent; this loop, at once.
    recorded: Recording | None = None
    #: A paused run going on after a person's decision (``runs.approvals``).
    resume: approvals.Resume | None = None
    #: A call to ask about ends the run, the request for approval in its output (the
    #: Responses API: the client answers in its next request), instead of pausing it.
    approvals_in_output: bool = False


class RunNotRecorded(Exception):
    """The run's row could not be written: it ends failed, with nothing to update."""


@dataclass
class RunOutcome:
    status: str = "completed"
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    pending_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    error: dict[str, Any] | None = None
    ttft_ms: float | None = None
    #: The model's own finish reason on its last call (``stop``, ``length``, ...).
    finish_reason: str | None = None
    message_id: uuid.UUID | None = None
    message_created_at: datetime | None = None
    cost_usd: Decimal = Decimal(0)
    #: The model that answered (or, failed, was tried last): see ``llm.fallbacks``.
    served: Served | None = None
    #: Where a run waiting for approval stopped (status ``requires_action``).
    pause: dict[str, Any] | None = None
    #: ``[{document_id, chunk_id, filename, position, score}]`` the model was given.
    citations: list[dict[str, Any]] = field(default_factory=list)


def served_fields(model: str, provider: str, outcome: RunOutcome) -> dict[str, Any]:
    """Who answered, as ``message.completed`` and the run say it."""
    index = None if outcome.served is None else outcome.served.fallback_index
    return {"model": model, "provider": provider, "fallback_index": index}


def price_outcome(prices: Mapping[str, Any], model: str, outcome: RunOutcome) -> None:
    """``outcome.cost_usd`` at ``model``'s price per million tokens (none: free)."""
    price = prices.get(model)
    if price is not None:
        spent = price.input * outcome.input_tokens + price.output * outcome.output_tokens
        outcome.cost_usd = spent / Decimal(1_000_000)


def unexpected_problem(exc: BaseException) -> dict[str, Any]:
    """The problem a run that failed on an unexpected error ends with (no internals)."""
    return {
        "type": problem_type(getattr(exc, "type", "run-failed")),
        "title": "Run failed",
        "status": getattr(exc, "status", 500),
        "detail": getattr(exc, "detail", None) or "The run failed unexpectedly.",
    }


def provider_label(config: dict[str, Any], creds: dict[str, Any] | None) -> str:
    return "offline" if creds is None else str(creds.get("kind", "openai"))


class RunExecutor:
    def __init__(self, state: ChatState) -> None:
        self.state = state
        provider = getattr(getattr(state, "runtime", None), "tracer_provider", None)
        self.tracer = trace.get_tracer("agentmesh.chat.runs", tracer_provider=provider)

    @property
    def hub(self) -> RunHub:
        return self.state.hub

    def start(self, plan: RunPlan) -> RunChannel:
        channel = self.hub.open(plan.run_id)
        channel.base = plan.resume.last_event_id if plan.resume else 0  # ids continue
        channel.recorded = plan.recorded
        channel.task = asyncio.create_task(
            self._traced_run(plan, channel), name=f"run-{plan.run_id}"
        )
        if plan.recorded is not None:
            plan.recorded.start()
        return channel

    async def _traced_run(
        self,
        plan: RunPlan,
        channel: RunChannel,
        run: Callable[[], Awaitable[RunOutcome]] | None = None,
    ) -> RunOutcome:
        """The run (``run``, by default ``_run``) in a span of its own, a child of the
        request's (the task copied its context) that may outlive it; model calls and
        agents RPCs nest under it."""
        name = str(plan.config.get("name") or plan.agent_id)
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": name,
            "gen_ai.agent.id": str(plan.agent_id),
            "agentmesh.run_id": str(plan.run_id),
        }
        if plan.conversation_id is not None:  # none for /v1/chat/completions
            attributes["gen_ai.conversation.id"] = str(plan.conversation_id)
        with self.tracer.start_as_current_span(f"invoke_agent {name}", attributes=attributes):
            return await (self._run(plan, channel) if run is None else run())

    async def _model(self, plan: RunPlan, use: Candidate | None = None) -> tuple[Any, str]:
        settings = self.state.settings
        config = plan.config if use is None else use.config(plan.config)
        creds = None
        if config.get("provider_id"):
            creds = await self.state.agents_client.credentials(
                plan.user_id, uuid.UUID(str(config["provider_id"])), workspace_id=plan.workspace_id
            )
            await check_provider_address(creds.get("base_url"), settings.outbound_policy)
        temperature = (
            plan.temperature if plan.temperature is not None else config.get("temperature")
        )
        model = resolve_chat_model(
            provider_kind=None if creds is None else creds["kind"],
            model=config.get("model") or "offline",
            base_url=None if creds is None else creds.get("base_url"),
            api_key=None if creds is None else creds.get("api_key"),
            temperature=temperature,
            max_tokens=plan.max_tokens or config.get("max_output_tokens"),
            timeout=settings.model_timeout_seconds,
            policy=settings.outbound_policy,
            api_version=None if creds is None else creds.get("api_version"),
        )
        return model, provider_label(config, creds)

    def _search(self, plan: RunPlan) -> Search | None:
        """A search of the agent's knowledge bases (None when it has none)."""
        kb_ids = [str(kb) for kb in plan.config.get("knowledge_base_ids", [])]

        async def search(query: str, top_k: int) -> list[dict[str, Any]]:
            return await self.state.agents_client.knowledge_search(
                plan.user_id, kb_ids, query, top_k, workspace_id=plan.workspace_id
            )

        return search if kb_ids else None

    async def _tools(self, plan: RunPlan, outcome: RunOutcome) -> list[Any]:
        refs = [ref for ref in plan.config.get("tools", []) if ref.get("id") != "mcp"]
        mcp_refs = [ref for ref in plan.config.get("tools", []) if ref.get("id") == "mcp"]
        search, knowledge = self._search(plan), Knowledge.of(plan.config)
        if (
            search
            and knowledge.mode == "tool"
            and not any(ref.get("id") == "knowledge_search" for ref in refs)
        ):
            refs.append({"id": "knowledge_search", "config": {}})  # bound to the agent's KBs
        settings = self.state.settings
        tools = build_tools(
            refs,
            allow_private_network=settings.outbound_policy,
            knowledge_search=search and tool_search(search, knowledge, outcome.citations),
        )
        if mcp_refs:  # over MCP; a server that can't be reached is left out (logged)
            names = {tool.name for tool in tools}
            for tool in await mcp_tools(
                self.state.agents_client,
                plan.user_id,
                mcp_refs,
                workspace_id=plan.workspace_id,
                allow_private=settings.outbound_policy,
                timeout=settings.mcp_timeout_seconds,
            ):
                if tool.name in names:
                    logger.warning("mcp tool %r shadows another tool; skipped", tool.name)
                    continue
                names.add(tool.name)
                tools.append(tool)
        return tools

    async def _run(self, plan: RunPlan, channel: RunChannel) -> RunOutcome:
        outcome = RunOutcome()
        started = time.perf_counter()
        model_name = plan.config.get("model") or "offline"
        provider = "offline"
        announced = asyncio.ensure_future(self._announce(plan, channel, model_name))
        model = None
        try:
            model, provider = await self._model(plan)
            await self._loop(plan, channel, model, outcome, started, announced, provider)
        except asyncio.CancelledError:
            outcome.status = "cancelled"
        except RunNotRecorded:
            return await self._not_recorded(plan, channel, outcome)
        except (ModelCallFailed, StreamInterrupted) as exc:
            outcome.status = "failed"
            outcome.error = exc.problem()
        except Exception as exc:  # a run must always end with a recorded state
            logger.exception("run failed", extra={"run_id": str(plan.run_id)})
            outcome.status, outcome.error = "failed", unexpected_problem(exc)
        try:  # the row must be there before the run can be finished on it
            await asyncio.shield(announced)
        except RunNotRecorded:
            return await self._not_recorded(plan, channel, outcome)
        latency_ms = (time.perf_counter() - started) * 1000
        served = outcome.served or Served(model_name, provider, chat=model)
        price_outcome(self.state.settings.prices, served.model, outcome)  # who answered
        await asyncio.shield(
            self._finish(plan, channel, outcome, served.model, served.provider, latency_ms)
        )
        if plan.title_seed and served.chat is not None and outcome.status == "completed":
            asyncio.create_task(self._title(plan, served.chat, outcome.content))  # noqa: RUF006
        return outcome

    async def _not_recorded(
        self, plan: RunPlan, channel: RunChannel, outcome: RunOutcome
    ) -> RunOutcome:
        """The run's row was never written: nothing was shown, nothing is to update."""
        outcome.status, outcome.error = "failed", not_recorded_problem()
        outcome.content, outcome.tool_calls = "", []
        await self.hub.emit(channel, "run.failed", outcome.error)
        await self.hub.emit(channel, "done", {"status": outcome.status})
        return outcome

    async def _announce(self, plan: RunPlan, channel: RunChannel, model_name: str) -> None:
        """``run.started``, once the run's row is committed (see ``RunPlan.recorded``)."""
        if plan.recorded is not None:
            try:
                await asyncio.shield(plan.recorded)
            except Exception as exc:
                logger.warning(
                    "run not recorded", exc_info=True, extra={"run_id": str(plan.run_id)}
                )
                raise RunNotRecorded(str(plan.run_id)) from exc
        if plan.resume is not None and plan.resume.continued:
            return  # started before the pause
        await self.hub.emit(
            channel,
            "run.started",
            {
                "run_id": plan.run_id,
                "conversation_id": plan.conversation_id,
                "agent_id": plan.agent_id,
                "agent_version": plan.agent_version,
                "model": model_name,
            },
        )

    async def _title(self, plan: RunPlan, model: Any, answer: str) -> None:
        """Name the conversation after its first exchange, with the agent's own model."""
        from langchain_core.messages import HumanMessage, SystemMessage
        from sqlalchemy import update

        from agentmesh.chat.models import Conversation

        try:
            reply = await model.ainvoke(
                [
                    SystemMessage(
                        "Write a title of at most six words for this conversation. "
                        "Answer with the title only."
                    ),
                    HumanMessage(f"User: {plan.title_seed}\nAssistant: {answer[:1000]}"),
                ]
            )
            title = str(reply.content).strip().strip('"').splitlines()[0][:200] or None
            async with self.state.sessionmaker() as session, session.begin():
                await session.execute(
                    update(Conversation)
                    .where(Conversation.id == plan.conversation_id, Conversation.title.is_(None))
                    .values(title=title)
                )
        except Exception:  # a title is a nicety: never fail a run for it
            logger.warning("title not generated", extra={"run_id": str(plan.run_id)})

    async def _loop(
        self,
        plan: RunPlan,
        channel: RunChannel,
        model: Any,
        outcome: RunOutcome,
        started: float,
        announced: asyncio.Future[None],
        provider: str,
    ) -> None:
        tools = [] if plan.client_tools is not None else await self._tools(plan, outcome)
        by_name = {tool.name: tool for tool in tools}

        def bind(model: Any, provider: str) -> Any:  # for each model of the chain
            if plan.client_tools:
                choice = tool_choice_for(provider, plan.tool_choice)
                bound = model.bind_tools(plan.client_tools, tool_choice=choice)
            else:
                bound = model.bind_tools(tools) if tools else model
            bound = with_response_format(bound, provider, plan.response_format)
            return bound

        own = Served(str(plan.config.get("model") or "offline"), provider, chat=model)
        chain = ModelChain(candidates(plan.config), lambda use: self._model(plan, use), own)
        outcome.served = chain.served  # kept current by the chain
        settings = self.state.settings
        ready = False  # run.started is out (and so the run's row is committed)
        first = 0
        if plan.resume is not None:  # the decided call first, then the model again
            await asyncio.shield(announced)  # (raises RunNotRecorded before any output)
            ready = True
            plan.resume.restore(outcome)
            first = plan.resume.step + 1
            messages = plan.resume.messages
            if messages is None:  # a new run starting with a decided call (Responses API)
                messages = await prompt_for(self.state, plan, model)
                messages.extend(plan.resume.calling())
            if await approvals.call_tools(
                self.hub,
                channel,
                plan,
                plan.resume.calls,
                by_name,
                messages,
                outcome,
                step=plan.resume.step,
                decision=plan.resume.decision,
            ):
                return
        else:
            messages = await prompt_for(self.state, plan, model)
            messages = await ground(self._search(plan), plan, messages, outcome.citations)
        for _step in range(first, settings.max_tool_steps):
            full: AIMessageChunk | None = None
            async for chunk in chain.stream(messages, bind, attempts=settings.model_attempts):
                if not ready:  # raises RunNotRecorded before anything is shown
                    await asyncio.shield(announced)
                    ready = True
                full = chunk if full is None else full + chunk
                text = chunk.text if isinstance(chunk.text, str) else chunk.text()
                if text:
                    if outcome.ttft_ms is None:
                        outcome.ttft_ms = (time.perf_counter() - started) * 1000
                    outcome.content += text
                    await self.hub.emit(channel, "message.delta", {"delta": text})
            if full is None:
                return
            meta = full.response_metadata or {}  # OpenAI, Anthropic, Ollama name it apart
            outcome.finish_reason = (
                meta.get("finish_reason") or meta.get("stop_reason") or meta.get("done_reason")
            )
            usage: Mapping[str, Any] = full.usage_metadata or {}
            outcome.input_tokens += int(usage.get("input_tokens", 0))
            outcome.output_tokens += int(usage.get("output_tokens", 0))
            calls = list(full.tool_calls or [])
            if not calls:
                return
            if plan.client_tools is not None:  # the OpenAI caller runs its own tools
                outcome.pending_tool_calls = [dict(call) for call in calls]
                return
            messages.append(full)  # (its first chunk waited for run.started already)
            if await approvals.call_tools(
                self.hub,
                channel,
                plan,
                [dict(c) for c in calls],
                by_name,
                messages,
                outcome,
                step=_step,
            ):
                return  # paused for a person's approval
        outcome.content += "" if outcome.content else "(stopped: tool step limit reached)"

    async def _finish(
        self,
        plan: RunPlan,
        channel: RunChannel,
        outcome: RunOutcome,
        model: str,
        provider: str,
        latency_ms: float,
    ) -> None:
        if outcome.status == "requires_action":
            if not plan.approvals_in_output:
                return await self._pause(plan, channel, outcome, model, provider)
            outcome.status = "completed"  # the request for approval is its output
        finished = FinishedRun(
            plan=plan,
            outcome=outcome,
            model=model,
            provider=provider,
            latency_ms=latency_ms,
            last_event_id=channel.base + len(channel.events) + 2,
        )
        try:
            outcome.message_id, outcome.message_created_at = await finish_run(self.state, finished)
        except RunAlreadyEnded:
            # Another replica's sweep failed this run while this one missed its heartbeats
            # (and ended its stream): that record stands.
            logger.warning("run was failed by the orphan sweep", extra={"run_id": str(plan.run_id)})
            outcome.status, outcome.error = "failed", interrupted_problem()
        except Exception:
            logger.exception("run not recorded", extra={"run_id": str(plan.run_id)})
            outcome.status, outcome.error = "failed", not_recorded_problem()
        usage = {
            "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens,
            "total_tokens": outcome.input_tokens + outcome.output_tokens,
        }
        if outcome.status == "completed":
            await self.hub.emit(
                channel,
                "message.completed",
                {
                    "message_id": outcome.message_id,
                    "content": outcome.content,
                    "tool_calls": outcome.tool_calls,
                    "citations": outcome.citations,
                    "usage": usage,
                    "cost_usd": str(outcome.cost_usd),
                    "status": "completed",
                    **served_fields(model, provider, outcome),
                },
            )
        elif outcome.status == "cancelled":
            await self.hub.emit(
                channel,
                "run.cancelled",
                {"message_id": outcome.message_id, "content": outcome.content, "usage": usage},
            )
        else:
            await self.hub.emit(channel, "run.failed", outcome.error or {})
        await self.hub.emit(channel, "done", {"status": outcome.status})

    async def _pause(
        self, plan: RunPlan, channel: RunChannel, outcome: RunOutcome, model: str, provider: str
    ) -> None:
        """Store the run waiting for approval, then end its stream for now."""
        try:
            paused = await approvals.pause_run(
                self.state,
                plan,
                outcome,
                model=model,
                provider=provider,
                last_event_id=channel.base + len(channel.events) + 1,
            )
            if not paused:
                outcome.status, outcome.error = "failed", interrupted_problem()
        except Exception:
            logger.exception("pause not recorded", extra={"run_id": str(plan.run_id)})
            outcome.status, outcome.error = "failed", not_recorded_problem()
        if outcome.status == "failed":
            await self.hub.emit(channel, "run.failed", outcome.error or {})
        await self.hub.emit(channel, "done", {"status": outcome.status})

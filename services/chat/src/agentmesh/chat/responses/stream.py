"""A response as the Responses API's Server-Sent Events, live or replayed.

``event: <type>`` and ``data: <json>`` with a ``sequence_number`` counting from 0:
``response.created`` (and ``response.queued`` for a background response),
``response.in_progress``, the output items' events as the run makes them, then
``response.completed`` / ``response.incomplete`` / ``response.failed`` (no ``[DONE]``, as
OpenAI). The events are a function of the run's events, so a replay (``GET
/v1/responses/{id}?stream=true&starting_after=N``, on any replica: the run's events come
from memory on the replica running it, from the ``CHAT_RUNS`` stream elsewhere) numbers
them exactly as the live stream did.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentmesh.chat.responses.output import OutputBuilder, response_id
from agentmesh.chat.responses.service import FINAL, Started, as_object, wait_final
from agentmesh.chat.runs.hub import RunEvent, RunHub
from agentmesh.chat.state import ChatState
from agentmesh.shared.access import Access

TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}


@dataclass(frozen=True)
class SseEvent:
    """One event of the stream (shaped for ``runs.sse.event_stream``)."""

    type: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"event: {self.type}\ndata: {payload}\n\n".encode()


class _Numbered:
    """Numbers events from 0; shows only those after ``after``."""

    def __init__(self, after: int = -1) -> None:
        self.sequence, self.after = 0, after

    def __call__(self, type: str, data: dict[str, Any]) -> SseEvent | None:
        number, self.sequence = self.sequence, self.sequence + 1
        if number <= self.after:
            return None
        return SseEvent(type, {"type": type, "sequence_number": number, **data})


def _opening(snapshot: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    events = [("response.created", {"response": snapshot})]
    if snapshot["background"]:
        events.append(("response.queued", {"response": snapshot}))
    in_progress = {**snapshot, "status": "in_progress"}
    return [*events, ("response.in_progress", {"response": in_progress})]


async def _events(
    number: _Numbered,
    snapshot: dict[str, Any],
    builder: OutputBuilder,
    run_events: AsyncIterator[RunEvent | None],
    final: Callable[[], Awaitable[dict[str, Any]]],
) -> AsyncIterator[SseEvent | None]:
    for type, data in _opening(snapshot):
        if (event := number(type, data)) is not None:
            yield event
    async for run_event in run_events:
        if run_event is None:  # idle: the caller sends a heartbeat
            yield None
            continue
        for type, data in builder.feed(run_event):
            if (event := number(type, data)) is not None:
                yield event
    ended = await final()
    for type, data in builder.finish_items(ended["output"]):
        if (event := number(type, data)) is not None:
            yield event
    terminal = number(TERMINAL.get(ended["status"], "response.failed"), {"response": ended})
    if terminal is not None:
        yield terminal


async def response_events(hub: RunHub, started: Started) -> AsyncIterator[SseEvent | None]:
    """The live stream of a response this request started."""
    channel, plan = started.channel, started.plan
    assert channel is not None and started.finished is not None
    finished = started.finished
    builder = OutputBuilder(
        plan.run_id,
        started.row["params"]["server_labels"],
        include_results=started.include_results,
    )

    async def final() -> dict[str, Any]:
        return as_object(await asyncio.shield(finished))

    async for event in _events(
        _Numbered(), as_object(started.row), builder, hub.follow_local(channel, 0), final
    ):
        yield event


async def _nothing() -> AsyncIterator[RunEvent | None]:
    return
    yield


async def replay(
    state: ChatState, access: Access, row: dict[str, Any], run_status: str | None, after: int
) -> AsyncIterator[SseEvent | None]:
    """A stored response's events after sequence number ``after``, then live to its end."""
    hub = state.hub
    run_id = row["id"]
    echo = row["params"]
    builder = OutputBuilder(
        run_id, echo.get("server_labels") or {}, include_results=bool(echo.get("include_results"))
    )
    started = {
        **row,
        "status": "queued" if row["background"] else "in_progress",
        "output": [],
        "usage": None,
        "error": None,
        "incomplete_details": None,
        "completed_at": None,
    }
    ended = as_object(row, run_status)["status"] in FINAL
    channel = hub.local.get(run_id)
    if channel is not None:
        source: AsyncIterator[RunEvent | None] = hub.follow_local(channel, 0)
    elif ended and not await hub.stream_events(run_id, timeout=2):
        source = _nothing()  # its events are gone: the stored output, whole
    else:
        source = hub.follow_stream(run_id, 0, idle_timeout=state.settings.heartbeat_seconds)

    async def final() -> dict[str, Any]:
        return await wait_final(state, access, response_id(run_id))

    async for event in _events(_Numbered(after), as_object(started), builder, source, final):
        yield event

"""A running response as the Responses API's Server-Sent Events.

``event: <type>`` and ``data: <json>`` with a ``sequence_number`` counting from 0:
``response.created``, ``response.in_progress``, the output items' events as the run makes
them, then ``response.completed`` / ``response.incomplete`` / ``response.failed`` (no
``[DONE]``, as OpenAI).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agentmesh.chat.responses.output import OutputBuilder
from agentmesh.chat.responses.service import Started, as_object
from agentmesh.chat.runs.hub import RunHub

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


async def response_events(hub: RunHub, started: Started) -> AsyncIterator[SseEvent]:
    channel, plan = started.channel, started.plan
    assert channel is not None and started.finished is not None
    sequence = 0

    def event(type: str, data: dict[str, Any]) -> SseEvent:
        nonlocal sequence
        out = SseEvent(type, {"type": type, "sequence_number": sequence, **data})
        sequence += 1
        return out

    snapshot = as_object(started.row)
    yield event("response.created", {"response": snapshot})
    yield event("response.in_progress", {"response": snapshot})
    builder = OutputBuilder(plan.run_id, plan.config, include_results=started.include_results)
    async for run_event in hub.follow_local(channel, 0):
        for type, data in builder.feed(run_event):
            yield event(type, data)
    row = await asyncio.shield(started.finished)
    assert channel.task is not None
    outcome = await asyncio.shield(channel.task)
    for type, data in builder.finish(outcome, incomplete=row["status"] == "incomplete"):
        yield event(type, data)
    yield event(TERMINAL[row["status"]], {"response": as_object(row)})

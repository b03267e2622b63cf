"""Run events already waiting go out in one write; an idle stream still gets heartbeats."""

from __future__ import annotations

import asyncio

from agentmesh.chat.runs.hub import RunEvent
from agentmesh.chat.runs.sse import HEARTBEAT, _with_heartbeats


async def test_events_already_queued_go_out_together():
    events = [RunEvent(i, "message.delta", {"delta": f"t{i}"}) for i in range(1, 4)]

    async def burst():
        for event in events:  # no await between them: all queued at once
            yield event

    chunks = [chunk async for chunk in _with_heartbeats(burst(), heartbeat=5)]
    assert chunks == [b"".join(event.sse() for event in events)]


async def test_events_apart_go_out_apart_with_heartbeats_between():
    first, second = RunEvent(1, "run.started", {}), RunEvent(2, "done", {"status": "completed"})

    async def slow():
        yield first
        await asyncio.sleep(0.3)
        yield second

    chunks = [chunk async for chunk in _with_heartbeats(slow(), heartbeat=0.1)]
    assert chunks[0] == first.sse() and chunks[-1] == second.sse()
    assert HEARTBEAT in chunks[1:-1]

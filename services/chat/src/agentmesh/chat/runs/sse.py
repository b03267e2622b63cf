"""Server-Sent Events out of run events, with heartbeat comments while idle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from agentmesh.chat.metrics import ACTIVE_STREAMS
from agentmesh.chat.runs.hub import RunEvent

HEARTBEAT = b": heartbeat\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _with_heartbeats(
    events: AsyncIterator[RunEvent | None], heartbeat: float
) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[RunEvent | StopAsyncIteration | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
        finally:
            await queue.put(StopAsyncIteration())

    task = asyncio.create_task(pump())
    ACTIVE_STREAMS.inc()
    try:
        ended = False
        while not ended:
            if queue.empty():
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=heartbeat)
                except TimeoutError:
                    yield HEARTBEAT
                    continue
            else:  # no timer (wait_for makes a task of each get) for what is there already
                item = queue.get_nowait()
            # Every event already queued goes out in one write: a busy replica, whose
            # tokens pile up between two turns of its loop, sends fewer, larger chunks
            # (each one a pass through the ASGI middleware and a syscall, and again in the
            # gateway). An idle one still sends each event the moment it is emitted.
            batch: list[bytes] = []
            while True:
                if isinstance(item, StopAsyncIteration):
                    ended = True
                    break
                batch.append(HEARTBEAT if item is None else item.sse())
                if queue.empty():
                    break
                item = queue.get_nowait()
            if batch:
                yield b"".join(batch)
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    finally:
        ACTIVE_STREAMS.dec()
        # The client went away (or the run ended): stop following; the run goes on.
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def event_stream(
    events: AsyncIterator[RunEvent | None], heartbeat: float, headers: dict[str, Any] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        _with_heartbeats(events, heartbeat),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **(headers or {})},
    )

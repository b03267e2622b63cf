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
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=heartbeat)
            except TimeoutError:
                yield HEARTBEAT
                continue
            if isinstance(item, StopAsyncIteration):
                break
            yield HEARTBEAT if item is None else item.sse()
        if task.done() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    finally:
        ACTIVE_STREAMS.dec()
        # The client went away (or the run ended): stop following; the run goes on.
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


def event_stream(events: AsyncIterator[RunEvent | None], heartbeat: float,
                 headers: dict[str, Any] | None = None) -> StreamingResponse:  # fmt: skip
    return StreamingResponse(
        _with_heartbeats(events, heartbeat), media_type="text/event-stream",
        headers={**SSE_HEADERS, **(headers or {})},
    )  # fmt: skip

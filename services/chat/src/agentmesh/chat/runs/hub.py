"""Run events: kept in memory on the replica running the run, and published on core NATS
(``chat.run.<run_id>``), where the ``CHAT_RUNS`` stream keeps them for a few hours.

The replica running a run serves its own clients from memory (no broker hop on the token
path). Any other replica replays and follows a run from the stream, so a client that
drops can reconnect anywhere with ``Last-Event-ID`` and get exactly the events it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agentmesh.chat.agents_client import nats_client
from agentmesh.shared.events.streams import RUNS_STREAM, RUNS_SUBJECT_PREFIX

logger = logging.getLogger("agentmesh.chat.runs")
TERMINAL = "done"
#: How long a finished run's events stay in memory for late followers on this replica.
LINGER_SECONDS = 60.0


@dataclass(frozen=True)
class RunEvent:
    id: int
    type: str
    data: dict[str, Any]

    def sse(self) -> bytes:
        payload = json.dumps(self.data, separators=(",", ":"), default=str)
        return f"id: {self.id}\nevent: {self.type}\ndata: {payload}\n\n".encode()


@dataclass
class RunChannel:
    run_id: uuid.UUID
    events: list[RunEvent] = field(default_factory=list)
    waiters: set[asyncio.Event] = field(default_factory=set)
    task: asyncio.Task[Any] | None = None
    #: The commit of the run's row, while the model call runs alongside it.
    recorded: asyncio.Future[None] | None = None
    #: A cancel was asked for: one is enough (a second would cut the run's ending short).
    cancel_requested: bool = False
    #: The id of the event before this channel's first: a run going on after a pause for
    #: approval numbers its events after the pause's.
    base: int = 0

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1].type == TERMINAL


class RunHub:
    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.local: dict[uuid.UUID, RunChannel] = {}
        self._background: set[asyncio.Task[None]] = set()

    def keep(self, task: asyncio.Task[None]) -> None:
        """Hold a background task of this replica (a cancel sent again) until it ends, or
        until the replica stops."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self, app: Any = None) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def open(self, run_id: uuid.UUID) -> RunChannel:
        channel = RunChannel(run_id)
        self.local[run_id] = channel
        return channel

    async def emit(self, channel: RunChannel, type: str, data: dict[str, Any]) -> RunEvent:
        event = RunEvent(channel.base + len(channel.events) + 1, type, data)
        channel.events.append(event)
        for waiter in channel.waiters:
            waiter.set()
        nc = nats_client(self.broker)
        if nc is not None and nc.is_connected:
            body = json.dumps({"id": event.id, "type": type, "data": data}, default=str)
            try:  # core publish: no ack wait on the token path; the stream captures it
                await nc.publish(
                    f"{RUNS_SUBJECT_PREFIX}{channel.run_id}",
                    body.encode(),
                    headers={"Nats-Msg-Id": f"{channel.run_id}:{event.id}"},
                )
            except Exception:  # a broker outage must not stop the run
                logger.warning("run event not published", extra={"run_id": str(channel.run_id)})
        if type == TERMINAL:
            asyncio.get_running_loop().call_later(LINGER_SECONDS, self._forget, channel)
        return event

    def _forget(self, channel: RunChannel) -> None:
        if self.local.get(channel.run_id) is channel:  # not the channel of its next part
            del self.local[channel.run_id]

    async def follow_local(self, channel: RunChannel, after: int) -> AsyncGenerator[RunEvent, None]:
        position = max(after - channel.base, 0)
        waiter = asyncio.Event()
        channel.waiters.add(waiter)
        try:
            while True:
                while position < len(channel.events):
                    event = channel.events[position]
                    position += 1
                    yield event
                    if event.type == TERMINAL:
                        return
                waiter.clear()
                await waiter.wait()
        finally:
            channel.waiters.discard(waiter)

    async def follow_stream(
        self, run_id: uuid.UUID, after: int, *, idle_timeout: float
    ) -> AsyncIterator[RunEvent | None]:
        """Replay then follow ``chat.run.<run_id>`` from the stream. Yields ``None`` after
        ``idle_timeout`` without an event (the caller sends a heartbeat and checks the run)."""
        from nats.js.api import DeliverPolicy

        js = self.broker.config.connection_state.stream
        subscription = await js.subscribe(
            f"{RUNS_SUBJECT_PREFIX}{run_id}",
            stream=RUNS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL,
        )
        try:
            while True:
                try:
                    message = await subscription.next_msg(timeout=idle_timeout)
                except TimeoutError:
                    yield None
                    continue
                body = json.loads(message.data)
                if body["id"] <= after:
                    continue
                event = RunEvent(body["id"], body["type"], body["data"])
                yield event
                if event.type == TERMINAL:
                    return
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def stream_events(self, run_id: uuid.UUID, *, timeout: float = 5.0) -> list[RunEvent]:
        """Every event of ``run_id`` the stream holds now (none when it holds none)."""
        from nats.js.api import DeliverPolicy
        from nats.js.errors import NotFoundError

        js = self.broker.config.connection_state.stream
        subject = f"{RUNS_SUBJECT_PREFIX}{run_id}"
        try:
            last = await js.get_last_msg(RUNS_STREAM, subject)
        except NotFoundError:
            return []
        subscription = await js.subscribe(
            subject, stream=RUNS_STREAM, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
        )
        events: list[RunEvent] = []
        try:
            while True:
                message = await subscription.next_msg(timeout=timeout)
                body = json.loads(message.data)
                events.append(RunEvent(body["id"], body["type"], body["data"]))
                if message.metadata.sequence.stream >= last.seq:
                    return events
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

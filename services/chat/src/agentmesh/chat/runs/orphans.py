"""Runs whose replica stopped: heartbeats from the replica running them, a sweep on every
replica.

A run is an asyncio task on the replica that started it. Every ``run_heartbeat_seconds``
that replica marks all of its running runs alive in one ``UPDATE`` (short turns cost
nothing: the run's insert sets the first heartbeat). Every replica also sweeps: a running
run whose heartbeat is older than ``run_orphan_after`` lost its replica, so the sweep
reads its events from ``CHAT_RUNS`` (no transaction open meanwhile), then fails it
atomically (one replica takes each), releases its budget reservation, saves what was
streamed (rebuilt from the run's ``message.delta`` events) as a failed assistant
message with ``chat.message.completed`` (status ``failed``) through the outbox, and then
ends the run's stream with ``run.failed`` and ``done``, numbered after the stream's last
event, so a client following it on any replica gets the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from sqlalchemy import text

from agentmesh.chat.agents_client import nats_client
from agentmesh.chat.conversations.service import sweep_converted
from agentmesh.chat.models import WHOLE_WORKSPACE, new_id
from agentmesh.chat.runs.approvals import expire_pauses
from agentmesh.chat.runs.hub import TERMINAL, RunEvent, RunHub
from agentmesh.chat.runs.repository import (
    CLAIM_ORPHANS,
    FIND_ORPHANS,
    MESSAGE_CTE,
    NO_MESSAGE_CTE,
    RECORD_ORPHAN,
    heartbeat,
    interrupted_problem,
)
from agentmesh.chat.state import ChatState
from agentmesh.shared.events.contracts import MessageCompleted
from agentmesh.shared.events.streams import RUNS_STREAM, RUNS_SUBJECT_PREFIX

logger = logging.getLogger("agentmesh.chat.runs")
#: Most orphans one sweep takes (the next sweep takes the rest).
SWEEP_LIMIT = 100


def rebuild(events: list[RunEvent]) -> tuple[str, list[dict[str, Any]]]:
    """The answer's text and tool calls as far as they were streamed."""
    content = "".join(str(e.data.get("delta", "")) for e in events if e.type == "message.delta")
    calls: dict[str, dict[str, Any]] = {}
    for event in events:
        if event.type == "tool.call":
            calls[str(event.data.get("id"))] = dict(event.data)
        elif event.type == "tool.result" and str(event.data.get("id")) in calls:
            calls[str(event.data.get("id"))]["result"] = event.data.get("result")
    return content, list(calls.values())


class RunWatch:
    """The heartbeat and orphan-sweep loop of one chat replica."""

    def __init__(self, state: ChatState) -> None:
        self.state = state
        self._task: asyncio.Task[None] | None = None

    @property
    def hub(self) -> RunHub:
        return self.state.hub

    async def start(self, app: Any = None) -> None:
        self._task = asyncio.create_task(self._loop(), name="chat-run-watch")

    async def stop(self, app: Any = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        interval = self.state.settings.run_heartbeat_seconds
        while True:
            await asyncio.sleep(interval)
            try:
                await self.beat()
            except Exception:
                logger.warning("run heartbeat failed", exc_info=True)
            try:
                await self.sweep()
            except Exception:
                logger.warning("orphaned-run sweep failed; retrying", exc_info=True)
            try:
                await expire_pauses(self.state)
            except Exception:
                logger.warning("expiry of runs waiting for approval failed", exc_info=True)
            sweep_converted()  # converted history of idle conversations leaves memory

    def live_run_ids(self) -> list[uuid.UUID]:
        """Runs executing on this replica now."""
        return [
            run_id
            for run_id, channel in list(self.hub.local.items())
            if channel.task is not None and not channel.task.done()
        ]

    async def beat(self) -> None:
        """Mark this replica's running runs alive: one statement, none when idle."""
        ids = self.live_run_ids()
        if ids:
            async with self.state.sessionmaker() as session, session.begin():
                await heartbeat(session, ids)

    async def sweep(self) -> list[uuid.UUID]:
        """Fail the runs whose replica stopped; returns their ids.

        No transaction is open while NATS is read: the candidates are read, their events
        fetched, and only then are they claimed and recorded in one short transaction. A
        NATS failure leaves them all running: the next sweep retries."""
        nc = nats_client(self.state.runtime.broker)
        if nc is None or not nc.is_connected:
            return []  # where a run's stream ended is in NATS: wait until it is back
        settings = self.state.settings
        window = {"orphan_seconds": settings.run_orphan_after, "local_ids": self.live_run_ids()}
        async with self.state.sessionmaker() as session:
            found = await session.scalars(FIND_ORPHANS, {**window, "limit": SWEEP_LIMIT})
            candidates = list(found)
        if not candidates:
            return []
        streamed = {run_id: await self.hub.stream_events(run_id) for run_id in candidates}
        ends: list[tuple[uuid.UUID, int]] = []
        error = interrupted_problem()
        async with self.state.sessionmaker() as session, session.begin():
            claimed = (
                (
                    await session.execute(
                        CLAIM_ORPHANS,
                        {
                            **window,
                            "error": json.dumps(error),
                            "ids": candidates,
                            "whole": WHOLE_WORKSPACE,
                        },
                    )
                )
                .mappings()
                .all()
            )
            for run in claimed:
                events = streamed[run["id"]]
                last = events[-1].id if events else 0
                ended = bool(events) and events[-1].type == TERMINAL
                content, tool_calls = rebuild(events)
                conversational = run["conversation_id"] is not None
                assistant_id = new_id() if conversational else None
                sql = RECORD_ORPHAN.format(
                    message_cte=MESSAGE_CTE if conversational else NO_MESSAGE_CTE
                )
                await session.execute(
                    text(sql),
                    {
                        "run_id": run["id"],
                        "assistant_id": assistant_id,
                        "last_event_id": last if ended else last + 2,
                        "conversation_id": run["conversation_id"],
                        "user_id": run["user_id"],
                        "parent_id": run["user_message_id"],
                        "content": content,
                        "tool_calls": json.dumps(tool_calls, default=str),
                        "status": "failed",
                        "agent_version": run["agent_version"],
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "citations": "[]",  # an interrupted run cites none
                    },
                )
                await self.state.outbox.add(
                    session,
                    MessageCompleted(
                        message_id=assistant_id or run["id"],
                        conversation_id=run["conversation_id"],
                        run_id=run["id"],
                        user_id=run["user_id"],
                        workspace_id=run["workspace_id"],
                        agent_id=run["agent_id"],
                        agent_version=run["agent_version"],
                        model=run["model"],
                        provider=run["provider"],
                        status="failed",
                        latency_ms=round(float(run["latency_ms"] or 0), 3),
                    ),
                )
                if not ended:
                    ends.append((run["id"], last))
        for run_id, last in ends:
            await self._end_stream(run_id, last, error)
        for run in claimed:
            logger.warning("run failed: its replica stopped", extra={"run_id": str(run["id"])})
        return [run["id"] for run in claimed]

    async def _end_stream(self, run_id: uuid.UUID, last: int, error: dict[str, Any]) -> None:
        """``run.failed`` and ``done`` after event ``last``. Should this fail, a follower
        still ends: it rebuilds the end from the run's row (``last_event_id``)."""
        broker = self.state.runtime.broker
        assert broker is not None  # chat always runs on NATS
        js = broker.config.connection_state.stream
        subject = f"{RUNS_SUBJECT_PREFIX}{run_id}"
        for event in (
            RunEvent(last + 1, "run.failed", error),
            RunEvent(last + 2, TERMINAL, {"status": "failed"}),
        ):
            body = json.dumps({"id": event.id, "type": event.type, "data": event.data})
            try:
                await js.publish(
                    subject,
                    body.encode(),
                    stream=RUNS_STREAM,
                    timeout=5,
                    headers={"Nats-Msg-Id": f"{run_id}:{event.id}"},
                )
            except Exception:
                logger.warning("end of orphaned run not published", extra={"run_id": str(run_id)})
                return

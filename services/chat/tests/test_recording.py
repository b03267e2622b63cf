"""The run's row begins once the model request is sent (``runs.recording``), never later
than the route's wait, and a run never waits on a write that did not begin."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.chat.runs import recording
from agentmesh.chat.runs.recording import Recording


def counting_write() -> tuple[list[str], Recording]:
    writes: list[str] = []

    async def write() -> None:
        writes.append("row")

    return writes, Recording(write)


async def test_the_row_begins_when_the_request_body_is_sent():
    writes, row = counting_write()
    await row.trace("http11.send_request_headers.started", {})
    await row.trace("http11.send_request_headers.complete", {})
    await asyncio.sleep(0)
    assert not row.started and writes == []  # the request is not out yet
    await row.trace("http11.send_request_body.complete", {})
    assert row.started
    await row
    row.start()  # once only
    await asyncio.sleep(0)
    assert writes == ["row"]


@pytest.mark.parametrize(
    "event", ["connection.connect_tcp.started", "http2.send_request_body.complete"]
)
async def test_a_new_connection_or_http2_begins_it_too(event):
    writes, row = counting_write()
    await row.trace(event, {})
    await row
    assert writes == ["row"]


async def test_the_route_waits_for_the_request_then_goes_on():
    writes, row = counting_write()
    sent = asyncio.Event()

    async def run() -> None:
        await asyncio.sleep(0)
        await row.trace("http11.send_request_body.complete", {})
        sent.set()
        await asyncio.Event().wait()  # the answer streams for a long time

    task = asyncio.create_task(run())
    try:
        await row.after_request(task)
        assert sent.is_set() and row.started  # returned when the request went out
        await row
        assert writes == ["row"]
    finally:
        task.cancel()


async def test_a_run_that_ends_before_any_request_still_gets_its_row():
    writes, row = counting_write()

    async def refused() -> None:  # e.g. the provider's address is refused by the guard
        await asyncio.sleep(0)

    task = asyncio.create_task(refused())
    await row.after_request(task)
    await row
    assert writes == ["row"]


async def test_the_route_waits_no_longer_than_its_limit(monkeypatch):
    monkeypatch.setattr(recording, "REQUEST_WAIT_SECONDS", 0.05)
    writes, row = counting_write()
    stuck = asyncio.create_task(asyncio.Event().wait())  # never sends (a slow DNS, say)
    try:
        await row.after_request(stuck)
        assert row.started and not stuck.done()
        await row
        assert writes == ["row"]
    finally:
        stuck.cancel()


async def test_a_cancelled_route_still_begins_the_row():
    writes, row = counting_write()
    stuck = asyncio.create_task(asyncio.Event().wait())
    waiting = asyncio.create_task(row.after_request(stuck))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    stuck.cancel()
    await row
    assert writes == ["row"]


async def test_a_failed_write_fails_whoever_waits_on_it():
    async def broken() -> None:
        raise ConnectionError("database down")

    row = Recording(broken)
    row.start()
    with pytest.raises(ConnectionError):
        await asyncio.shield(row)


async def test_a_cancelled_write_is_a_failed_one_to_whoever_waits():
    # At the loop's shutdown: the run must end as not recorded, not be cancelled itself.
    async def slow() -> None:
        await asyncio.Event().wait()

    row = Recording(slow)
    row.start()
    await asyncio.sleep(0)
    assert row._task is not None
    row._task.cancel()
    with pytest.raises(RuntimeError, match="not written"):
        await asyncio.shield(row)

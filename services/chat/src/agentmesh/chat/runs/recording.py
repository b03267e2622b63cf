"""The run's row written beside its model call, once the model request is on its way.

A run without a budget does not wait for its row before calling the model: the write and
the call go on together, and nothing reaches the client until the row is committed (see
``RunPlan.recorded``). Which of the two goes first still matters on a busy event loop: the
row's statement (acquiring a pooled connection, sending the ``INSERT``, reading its
answer), the response's start and the run's announcement all run on the same loop as the
model request, and whatever is ready when the request would be written goes first. So the
write begins only once the request is sent (or a connection to the provider is being
opened, which takes longer than the write), when the run takes any other path, or at the
latest when the route stops waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

#: How long a route waits for its run to send the model request before it answers anyway
#: (and starts the row's write itself): names to resolve and credentials to fetch take
#: milliseconds, and a new connection starts the write as it opens.
REQUEST_WAIT_SECONDS = 0.5

#: httpcore's trace events after which the model request no longer waits on the loop: its
#: body was written, or a new connection is being opened (a round trip or more).
_SENT_EVENTS = ("send_request_body.complete", "send_request_body.failed", "connect_tcp.started")


class Recording(asyncio.Future[None]):
    """The commit of a run's row: done when it is committed, failed when it cannot be.

    The write begins at the first ``start()``; every path of a run calls it before it
    waits on the write, so no run waits on a write that never began.
    """

    def __init__(self, write: Callable[[], Coroutine[Any, Any, None]]) -> None:
        super().__init__()
        self._write: Callable[[], Coroutine[Any, Any, None]] | None = write
        self._task: asyncio.Task[None] | None = None
        self._begun: asyncio.Future[None] = self.get_loop().create_future()

    @property
    def started(self) -> bool:
        return self._write is None

    def start(self) -> None:
        """Begin the write (once; later calls do nothing)."""
        if self._write is None:
            return
        write, self._write = self._write, None
        self._task = asyncio.ensure_future(write())
        self._task.add_done_callback(self._settle)
        if not self._begun.done():
            self._begun.set_result(None)

    async def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` extension for the model request: starts the write once the
        request is sent (see ``_SENT_EVENTS``)."""
        if event.endswith(_SENT_EVENTS):
            self.start()

    async def after_request(self, run: asyncio.Task[Any] | None) -> None:
        """For the route that started ``run``: wait until the run has sent its model
        request (and so started the write), or has ended, for at most
        ``REQUEST_WAIT_SECONDS``; then make sure the write has begun."""
        try:
            if not self.started and run is not None and not run.done():
                waiters: set[asyncio.Future[Any]] = {self._begun, run}
                await asyncio.wait(
                    waiters, timeout=REQUEST_WAIT_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            self.start()

    def _settle(self, task: asyncio.Task[None]) -> None:
        # A cancelled write (the loop shutting down) is a failed one to whoever waits: the
        # run then ends as not recorded, rather than cancelled without a last event.
        error = (
            RuntimeError("the run's row was not written: its write was cancelled")
            if task.cancelled()
            else task.exception()  # read even when nobody waits any more
        )
        if self.done():
            return
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(None)

"""The ingest worker of one replica: claims documents and indexes them off the event loop.

Each of the replica's ``AGENTS_INGEST_CONCURRENCY`` slots owns one worker process (a
``ProcessPoolExecutor`` of one, spawned on first use), which parses, splits and, for the
local model, embeds; the local model is loaded once per process. Remote embeddings are
HTTP calls and stay on the event loop. A document over ``AGENTS_INGEST_DOCUMENT_TIMEOUT_SECONDS``
ends ``failed``; its process is killed (a running task cannot be cancelled otherwise) and
the slot starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agentmesh.agents.knowledge import ingest, jobs, metrics, repository
from agentmesh.agents.knowledge.embedding import Embedder
from agentmesh.agents.knowledge.models import KnowledgeBase
from agentmesh.agents.settings import AgentsSettings
from agentmesh.shared import errortracking
from agentmesh.shared.events.outbox import Outbox

logger = logging.getLogger("agentmesh.agents.ingest")
EMBED_BATCH = 64


class _Lost(Exception):
    """The document is no longer this worker's job."""


#: Every pool not yet killed, held here (not weakly) so that the exit hook still finds the
#: pool of a worker dropped without ``stop()``.
_live_pools: set[ProcessPoolExecutor] = set()


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill every process of ``pool``, including one still starting, and shut it down.

    A running task cannot be cancelled, and a plain shutdown would wait for it.
    """
    _live_pools.discard(pool)
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        # ``Process.kill`` signals only a process not yet reaped (its pid is not reused).
        with contextlib.suppress(Exception):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _kill_live_pools() -> None:
    """At interpreter exit, before ``concurrent.futures`` joins its pools' threads.

    A slot whose worker never stopped (its replica's shutdown did not run, or it was
    cancelled while its process was still starting) would otherwise keep the interpreter
    waiting on that process.
    """
    for pool in list(_live_pools):
        _kill(pool)


# Hooks registered here run before the executor's own (threading runs them in reverse).
_register_at_thread_exit = getattr(threading, "_register_atexit", None)


class _Slot:
    """One worker process, started on first use and killed when its document overruns."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self.pool: ProcessPoolExecutor | None = None
        self.job: jobs.Job | None = None

    async def start(self) -> None:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=ingest.init_process,
                initargs=(self.nice,),
            )
            _live_pools.add(self.pool)
            await asyncio.wrap_future(self.pool.submit(ingest.warm_up))

    async def run(self, fn: Any, *args: Any) -> Any:
        await self.start()
        assert self.pool is not None
        return await asyncio.wrap_future(self.pool.submit(fn, *args))

    def kill(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            _kill(pool)


if _register_at_thread_exit is not None:
    _register_at_thread_exit(_kill_live_pools)


class IngestWorker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        embedder: Embedder,
        settings: AgentsSettings,
    ) -> None:
        self.sessionmaker, self.outbox, self.embedder = sessionmaker, outbox, embedder
        self.settings = settings
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.slots = [
            _Slot(settings.ingest_worker_nice) for _ in range(settings.ingest_concurrency)
        ]
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        metrics.watch_worker(self)

    def wake(self) -> None:
        """A document was queued: claim now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self.slots:
            self._loop = asyncio.create_task(self._claim_loop(), name="ingest-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for slot in self.slots:
            slot.kill()
        with contextlib.suppress(Exception):  # the lease runs out anyway
            await jobs.release(self.sessionmaker, self.id)

    async def _claim_loop(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        measured = -s.common.metrics_refresh_seconds
        while True:
            self._wake.clear()
            free = [slot for slot in self.slots if slot.job is None]
            try:
                claimed = await jobs.claim(
                    self.sessionmaker,
                    self.id,
                    slots=len(free),
                    per_user=s.ingest_per_user_concurrency,
                    lease_seconds=s.ingest_lease_seconds,
                )
            except Exception:
                logger.exception("claiming ingest jobs failed")
                claimed = []
            for slot, job in zip(free, claimed, strict=False):
                slot.job = job
                task = asyncio.create_task(self._run(slot, job), name=f"ingest-{job.document_id}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if loop.time() - measured >= s.common.metrics_refresh_seconds:
                measured = loop.time()  # after the claim: what is left waiting
                await self._measure_queue()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), s.ingest_poll_seconds)

    async def _measure_queue(self) -> None:
        try:
            async with self.sessionmaker() as session:
                metrics.QUEUED.set(await repository.count_queued(session))
        except Exception as exc:  # the gauge keeps its last value
            logger.debug("ingest queue not measured: %s", exc)

    async def _run(self, slot: _Slot, job: jobs.Job) -> None:
        limit = self.settings.ingest_document_timeout_seconds
        work = asyncio.current_task()
        assert work is not None
        beat = asyncio.create_task(self._heartbeat(job, work))
        timeout = asyncio.timeout(None)
        try:
            await slot.start()  # starting the process and the model is not the document's time
            timeout = asyncio.timeout(limit)
            async with timeout:
                pieces, vectors = await self._index(slot, job)
            beat.cancel()
            if await jobs.finish_ready(
                self.sessionmaker, self.outbox, self.id, job, pieces, vectors
            ):
                metrics.FINISHED.labels("ready").inc()
        except _Lost:
            pass
        except asyncio.CancelledError:
            slot.kill()  # its process may be busy with this document
            if not job.lost:
                raise
        except Exception as exc:
            if timeout.expired() or isinstance(exc, BrokenProcessPool):
                slot.kill()
            if timeout.expired():
                reason = (
                    f"TimeLimitExceeded: indexing took longer than the {limit:g} s limit "
                    "(AGENTS_INGEST_DOCUMENT_TIMEOUT_SECONDS)"
                )
            else:
                reason = f"{type(exc).__name__}: {exc}"
            extra = {"document_id": str(job.document_id), "error": reason[:500]}
            logger.warning("ingest failed", extra=extra)
            errortracking.capture(
                exc,
                service="agents",
                job="ingest",
                document_id=str(job.document_id),
                user_id=str(job.owner_id),
            )
            with contextlib.suppress(Exception):
                if await jobs.finish_failed(self.sessionmaker, self.outbox, self.id, job, reason):
                    metrics.FINISHED.labels("failed").inc()
        finally:
            beat.cancel()
            slot.job = None
            self._wake.set()

    async def _heartbeat(self, job: jobs.Job, work: asyncio.Task[None]) -> None:
        lease = self.settings.ingest_lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                ours = await jobs.heartbeat(self.sessionmaker, self.id, job, lease)
            except Exception:
                logger.exception("ingest heartbeat failed")
                continue
            if not ours:  # deleted, re-indexed or taken over: stop and write nothing
                job.lost = True
                work.cancel()
                return

    async def _index(self, slot: _Slot, job: jobs.Job) -> tuple[list, np.ndarray]:
        pieces = await slot.run(
            ingest.prepare, job.raw, job.content_type, job.chunk_size, job.overlap
        )
        job.raw = b""  # the worker has it; do not keep 20 MiB per job on the service
        if not pieces:
            raise ValueError("the document has no text")
        job.total = len(pieces)
        if not await jobs.heartbeat(
            self.sessionmaker, self.id, job, self.settings.ingest_lease_seconds
        ):
            raise _Lost
        async with self.sessionmaker() as session:
            kb = await session.get(KnowledgeBase, job.knowledge_base_id)
            if kb is None:
                raise ValueError("the knowledge base was deleted")
            model = (
                None
                if kb.embedding_provider_id is None
                else await self.embedder.for_kb(session, kb)
            )
        parts = []
        for start in range(0, len(pieces), EMBED_BATCH):
            batch = [content for content, _ in pieces[start : start + EMBED_BATCH]]
            if model is None:
                part = await slot.run(ingest.embed_local, batch)
            else:  # an HTTP provider: I/O, on the loop
                part = np.asarray(await model.aembed_documents(batch), dtype=np.float32)
            if part.ndim != 2 or part.shape[1] != job.dimension:
                raise ValueError(
                    f"the embedding model returned vectors of another size than {job.dimension}"
                )
            parts.append(part)
            metrics.CHUNKS_EMBEDDED.labels("local" if model is None else "remote").inc(len(batch))
            job.done += len(batch)
            if not await jobs.heartbeat(
                self.sessionmaker, self.id, job, self.settings.ingest_lease_seconds
            ):
                raise _Lost
        return pieces, np.concatenate(parts)

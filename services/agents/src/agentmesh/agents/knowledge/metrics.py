"""The agents service's ingest metrics (served with the shared ones at ``GET /metrics``).

- ``agentmesh_agents_ingest_jobs_queued``: documents waiting for a worker, every replica's
  (``repository.count_queued``, over the queue's partial index, refreshed by each worker's
  claim loop at most every ``AGENTMESH_METRICS_REFRESH_SECONDS``);
- ``agentmesh_agents_ingest_jobs_running``: documents this replica's workers index now
  (read at scrape time from the live workers);
- ``agentmesh_agents_ingest_jobs_finished_total{status}``: jobs this replica finished,
  ``ready`` or ``failed``;
- ``agentmesh_agents_ingest_chunks_embedded_total{embedder}``: chunks embedded, by the
  local model (``local``) or a provider's API (``remote``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

QUEUED = Gauge(
    "agentmesh_agents_ingest_jobs_queued", "Documents waiting to be indexed (all replicas)."
)
FINISHED = Counter(
    "agentmesh_agents_ingest_jobs_finished", "Ingest jobs finished, by status.", ["status"]
)
CHUNKS_EMBEDDED = Counter(
    "agentmesh_agents_ingest_chunks_embedded", "Chunks embedded, by embedder.", ["embedder"]
)

_WORKERS: weakref.WeakSet[Any] = weakref.WeakSet()


def watch_worker(worker: Any) -> None:
    """Report ``worker.slots`` busy at every scrape."""
    _WORKERS.add(worker)


class RunningCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        running = sum(
            1 for worker in list(_WORKERS) for slot in worker.slots if slot.job is not None
        )
        yield GaugeMetricFamily(
            "agentmesh_agents_ingest_jobs_running",
            "Documents this replica's workers are indexing.",
            value=running,
        )


REGISTRY.register(RunningCollector())

"""Run every benchmark: ``make bench`` (= ``uv run python -m bench``).

First the suite (``bench/run``: every figure of the table, written to ``bench/results``),
then those that are not in the table: chat's read-model lag, the upstream clients,
the outbound guard and request latency during a PDF ingest.
"""

import asyncio
import logging

from bench import ingest_latency, outbound_guard, read_model_lag, suite, upstream_clients

logging.disable(logging.INFO)
suite.write(asyncio.run(suite.main()))
print()
asyncio.run(read_model_lag.main(300, 50.0, 10))
print()
upstream_clients.main(3000, 64)
print()
asyncio.run(outbound_guard.main(300))
ingest_latency.report(asyncio.run(ingest_latency.main(20, 20, 120, 4, 8000)), 4)

"""Run every benchmark: ``make bench`` (= ``uv run python -m bench``)."""

import asyncio
import logging

from bench import event_propagation, identity_login, knowledge_ingest, knowledge_search

logging.disable(logging.INFO)
asyncio.run(identity_login.main(50, 5000))
print()
asyncio.run(event_propagation.main(500, 100.0))
print()
asyncio.run(knowledge_ingest.main(tokens=200, batch=32, chunks=256, documents=20, runs=3))
print()
asyncio.run(knowledge_search.main(total=100_000, real=8000, queries=300))

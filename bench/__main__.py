"""Run every benchmark: ``make bench`` (= ``uv run python -m bench``)."""

import asyncio
import logging

from bench import event_propagation, identity_login

logging.disable(logging.INFO)
asyncio.run(identity_login.main(50, 5000))
print()
asyncio.run(event_propagation.main(500, 100.0))

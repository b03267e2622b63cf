"""The CHAT_RUNS stream (run events kept for resuming) is bounded in bytes by a setting."""

from __future__ import annotations

import nats

from agentmesh.chat.app import create_app as create_chat
from agentmesh.shared.events.streams import RUNS_MAX_BYTES, RUNS_STREAM
from agentmesh.shared.settings import CommonSettings
from agentmesh.shared.testing.fixtures import app_client

from .conftest import chat_settings


async def runs_stream_max_bytes(nats_url: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(RUNS_STREAM)).config.max_bytes
    finally:
        await nc.close()


async def test_the_runs_stream_has_a_byte_limit_from_the_settings(common, agents, nats_url):
    assert RUNS_MAX_BYTES == CommonSettings().runs_stream_max_bytes == 1024**3
    limited = common.model_copy(update={"runs_stream_max_bytes": 64 * 1024**2})
    async with app_client(create_chat(chat_settings(limited))):
        assert await runs_stream_max_bytes(nats_url) == 64 * 1024**2
    async with app_client(create_chat(chat_settings(common))):  # the default again
        assert await runs_stream_max_bytes(nats_url) == RUNS_MAX_BYTES

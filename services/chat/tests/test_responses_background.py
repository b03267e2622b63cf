"""Background responses: queued at once, run without a client, cancelled, and resumed after
a dropped stream on another replica (a real provider over HTTP, slowed down)."""

from __future__ import annotations

import asyncio
import json

import httpx

from . import test_runs
from .test_runs import REPLY

# The slowed-down provider and the two replicas of the runs tests.
fake_llm, remote_agent, replicas = test_runs.fake_llm, test_runs.remote_agent, test_runs.replicas

RESPONSES = "/v1/responses"


def sse_data(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


def text_of(body: dict) -> str:
    return "".join(
        part["text"]
        for item in body["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


async def until_ended(client, id: str) -> dict:
    for _ in range(600):
        body = (await client.get(f"{RESPONSES}/{id}")).json()
        if body["status"] not in ("queued", "in_progress"):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{id} never ended")


async def test_background_runs_without_a_client_and_cancels(
    replicas,
    remote_agent,
    fake_llm,
):
    headers, _ = remote_agent
    first, second = replicas
    async with httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client:
        queued = await client.post(
            RESPONSES, json={"model": "keeper", "input": "go", "background": True}
        )
        assert queued.status_code == 200, queued.text
        body = queued.json()
        assert body["status"] == "queued" and body["background"] is True
        done = await until_ended(client, body["id"])
        assert done["status"] == "completed" and text_of(done) == REPLY

        fake_llm.token_delay_seconds = 0.1
        slow = (
            await client.post(
                RESPONSES, json={"model": "keeper", "input": "slowly", "background": True}
            )
        ).json()
        for _ in range(600):  # until its run has started
            if (await client.get(f"{RESPONSES}/{slow['id']}")).json()["status"] != "queued":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    async with httpx.AsyncClient(base_url=second, headers=headers, timeout=30) as other:
        cancelled = await other.post(f"{RESPONSES}/{slow['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert REPLY.startswith(text_of(cancelled.json())) and text_of(cancelled.json()) != REPLY
        plain = (await other.post(RESPONSES, json={"model": "keeper", "input": "x"})).json()
        refused = await other.post(f"{RESPONSES}/{plain['id']}/cancel")
        assert refused.status_code == 400, refused.text
        unstored = await other.post(
            RESPONSES, json={"model": "keeper", "input": "x", "background": True, "store": False}
        )
        assert unstored.status_code == 400 and unstored.json()["error"]["param"] == "background"


async def test_dropped_background_stream_resumes_on_another_replica(
    replicas,
    remote_agent,
    fake_llm,
):
    headers, _ = remote_agent
    fake_llm.token_delay_seconds = 0.03
    first, second = replicas
    seen: list[dict] = []
    body = {"model": "keeper", "input": "tell me", "background": True, "stream": True}
    async with (
        httpx.AsyncClient(base_url=first, headers=headers, timeout=30) as client,
        client.stream("POST", RESPONSES, json=body) as response,
    ):
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            *blocks, buffer = buffer.split("\n\n")
            seen += sse_data("\n\n".join(blocks))
            if sum(e["type"] == "response.output_text.delta" for e in seen) >= 3:
                break  # the client drops mid-stream
    assert [e["type"] for e in seen[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert seen[0]["response"]["status"] == "queued"
    id, last = seen[0]["response"]["id"], seen[-1]["sequence_number"]
    async with httpx.AsyncClient(base_url=second, headers=headers, timeout=30) as other:
        resumed = await other.get(
            f"{RESPONSES}/{id}", params={"stream": "true", "starting_after": last}
        )
        rest = sse_data(resumed.text)
        assert [e["sequence_number"] for e in rest] == list(range(last + 1, last + 1 + len(rest)))
        assert rest[-1]["type"] == "response.completed"
        events = seen + rest
        text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert text == REPLY == text_of(rest[-1]["response"])
        # A full replay, afterwards, numbers the same events the same way.
        again = sse_data((await other.get(f"{RESPONSES}/{id}", params={"stream": "true"})).text)
        assert [e["type"] for e in again] == [e["type"] for e in events]

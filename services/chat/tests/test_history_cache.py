"""Converted history is reused across turns, never modified, and forgotten on time."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

from langchain_core.messages import HumanMessage

from agentmesh.chat.conversations import service
from agentmesh.chat.llm.memory import plan_prompt
from agentmesh.chat.llm.offline import OfflineChatModel


def rows(n: int) -> list[SimpleNamespace]:
    out = []
    for i in range(n):
        out.append(
            SimpleNamespace(
                id=uuid.uuid4(),
                role="user",
                content=f"question {i} " * 30,
                tool_calls=[],
                status="completed",
            )
        )
        calls = (
            [{"id": f"c{i}", "name": "calculator", "args": {"expression": "1+1"}, "result": "2"}]
            if i % 3 == 0
            else []
        )
        out.append(
            SimpleNamespace(
                id=uuid.uuid4(),
                role="assistant",
                content=f"answer {i}",
                tool_calls=calls,
                status="completed",
            )
        )
    return out


async def test_history_is_converted_once_and_left_unmodified():
    service.forget_converted()
    history = rows(12)
    first = service.to_langchain(history)
    again = service.to_langchain(history)
    assert all(a is b for a, b in zip(first, again, strict=True))  # reused, not rebuilt
    snapshot = [m.model_dump() for m in first]
    # A run with everything that touches the messages: the window (with truncation of an
    # oversized latest question) and the model itself.
    prompt = plan_prompt("Be brief.", [*again, HumanMessage("x " * 5000)], window_tokens=300)
    [_ async for _ in OfflineChatModel(model="offline").astream(prompt.messages)]
    assert [m.model_dump() for m in service.to_langchain(history)] == snapshot
    assert [m.model_dump() for row in history for m in service._convert(row)] == snapshot


def test_entries_expire_and_can_be_forgotten(monkeypatch):
    service.forget_converted()
    history = rows(2)
    first = service.to_langchain(history)
    monkeypatch.setattr(service, "CONVERTED_TTL_SECONDS", 0.0)
    later = service.to_langchain(history[:1])  # the sweep drops everything expired
    assert later[0] is not first[0] and len(service._CONVERTED) == 1
    service.forget_converted()
    assert not service._CONVERTED


def test_the_cache_is_bounded_by_entries_and_characters(monkeypatch):
    service.forget_converted()
    monkeypatch.setattr(service, "CONVERTED_CACHE_SIZE", 5)
    service.to_langchain(rows(5))  # 10 entries now, over the bound until the next sweep
    service.sweep_converted()
    assert len(service._CONVERTED) == 5
    monkeypatch.setattr(service, "CONVERTED_CACHE_SIZE", 1000)
    monkeypatch.setattr(service, "CONVERTED_CACHE_CHARS", 1000)
    service.to_langchain(rows(20))  # each question is 360+ characters
    service.sweep_converted()
    assert 0 < service._held[0] <= 1000
    assert service._held[0] == sum(chars for _, _, chars in service._CONVERTED.values())
    service.forget_converted()
    assert service._held[0] == 0 and not service._CONVERTED

"""Memory: a conversation longer than the window never sends more than the window, and
older turns are summarized when the agent asks for it."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agentmesh.chat.llm.memory import SUMMARY_HEADING
from agentmesh.chat.llm.tokens import count_message_tokens
from agentmesh.chat.models import Conversation
from agentmesh.shared.testing.openai_server import FakeOpenAI

from .test_conversations import CONV

WINDOW = 256
LONG = "The quarterly report covers revenue, hiring, churn and the roadmap in detail. " * 4


def as_langchain(messages: list[dict]) -> list:
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
    return [kinds[m["role"]](m.get("content") or "") for m in messages]


@pytest.mark.parametrize("summarize", [False, True])
async def test_the_prompt_never_exceeds_the_window(
    chat, agents, make_agent, token_issuer, summarize
):
    headers = token_issuer.headers()
    async with FakeOpenAI(reply="Noted, and here is a fairly short answer.") as llm:
        provider = (
            await agents.post(
                "/api/v1/providers",
                headers=headers,
                json={
                    "kind": "openai",
                    "name": "l",
                    "base_url": llm.base_url,
                    "api_key": llm.api_key,
                },
            )
        ).json()
        agent = await make_agent(
            headers,
            provider_id=provider["id"],
            model="fake-model",
            memory={"window_tokens": WINDOW, "summarize": summarize},
        )
        conversation = (
            await chat.post(CONV, headers=headers, json={"agent_id": agent["id"], "title": "Long"})
        ).json()
        for i in range(8):
            answer = await chat.post(
                f"{CONV}/{conversation['id']}/messages",
                headers=headers,
                json={"content": f"Turn {i}. {LONG}"},
            )
            assert answer.status_code == 200, answer.text
        turns = [
            r.body
            for r in llm.requests
            if r.path.endswith("/chat/completions") and "Summarize" not in str(r.body)
        ]
        assert len(turns) == 8
        for body in turns:
            assert count_message_tokens(as_langchain(body["messages"])) <= WINDOW
        last = turns[-1]["messages"]
        assert last[-1]["content"].startswith("Turn 7.")
        assert len(last) < 2 * 8  # older turns were left out
        async with chat.app.state.sessionmaker() as session:
            stored = await session.get(Conversation, uuid.UUID(conversation["id"]))
        if summarize:
            assert stored.summary and stored.summary_upto is not None
            assert SUMMARY_HEADING in last[0]["content"]
        else:
            assert stored.summary is None
            assert all(SUMMARY_HEADING not in m["content"] for m in last if m["content"])

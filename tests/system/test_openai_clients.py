"""The official ``openai`` client and LangChain's ``ChatOpenAI``, unmodified, against the
gateway's /v1 with an AgentMesh API key: the agent is the model."""

from __future__ import annotations

import json

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


async def test_openai_client_models_and_completions(sdk_account):
    account = await sdk_account()
    client = openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key)
    try:
        models = [model.id async for model in client.models.list()]
        assert account.agent["id"] in models and "keeper" in models

        completion = await client.chat.completions.create(
            model="keeper",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello from the SDK"},
            ],
            temperature=0.2,
            max_tokens=200,
        )
        answer = completion.choices[0].message.content
        assert answer and answer.startswith('You said: "Hello from the SDK"')
        assert completion.choices[0].finish_reason == "stop"
        assert completion.usage and completion.usage.completion_tokens > 0
        assert completion.id.startswith("chatcmpl-")

        stream = await client.chat.completions.create(
            model=account.agent["id"],
            messages=[{"role": "user", "content": "Hello from the SDK"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == answer
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens

        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(
                model="no-such-agent", messages=[{"role": "user", "content": "hi"}]
            )
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="keeper", messages=[], n=1)
    finally:
        await client.close()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key="am_bad_key") as bad:
        with pytest.raises(openai.AuthenticationError) as refused:
            await bad.models.list()
    # The gateway answers it itself, in OpenAI's shape on /v1 (problem+json elsewhere).
    assert refused.value.body["type"] == "invalid_request_error"
    assert refused.value.body["code"] == "invalid_api_key"


async def test_openai_client_tool_calls(sdk_account):
    account = await sdk_account()
    client = openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    question = {"role": "user", "content": "Use get_weather for Lisbon"}
    try:
        first = await client.chat.completions.create(
            model="keeper", messages=[question], tools=tools
        )
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert "Lisbon" in json.loads(call.function.arguments)["city"]
        second = await client.chat.completions.create(
            model="keeper",
            tools=tools,
            messages=[
                question,
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21C"},
            ],
        )
        assert "Sunny, 21C" in (second.choices[0].message.content or "")
    finally:
        await client.close()


async def test_langchain_chat_openai(sdk_account):
    account = await sdk_account()
    model = ChatOpenAI(
        base_url=account.base_url, api_key=account.api_key, model="keeper", stream_usage=True
    )
    reply = await model.ainvoke([SystemMessage("Be brief."), HumanMessage("Hi LangChain")])
    assert str(reply.content).startswith('You said: "Hi LangChain"')
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 0

    full: AIMessageChunk | None = None
    async for chunk in model.astream("Hi LangChain"):
        full = chunk if full is None else full + chunk
    assert full is not None and full.content == reply.content
    assert full.usage_metadata and full.usage_metadata["output_tokens"] > 0

    with_tools = model.bind_tools([get_weather])
    called = await with_tools.ainvoke("Use get_weather for Oslo")
    (call,) = called.tool_calls
    assert call["name"] == "get_weather" and "Oslo" in call["args"]["city"]

    streamed: AIMessageChunk | None = None
    async for chunk in with_tools.astream("Use get_weather for Oslo"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and streamed.tool_calls[0]["name"] == "get_weather"

    answer = await with_tools.ainvoke(
        ["Use get_weather for Oslo", called, get_weather.invoke(call)]  # a ToolMessage
    )
    assert "Sunny in" in str(answer.content)

"""The official ``openai`` client's Responses API, unmodified, against the gateway's /v1
with an AgentMesh API key: the agent is the model, responses are kept in Postgres."""

from __future__ import annotations

import json

import openai
import pytest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


async def test_create_retrieve_chain_delete(sdk_account):
    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        first = await client.responses.create(
            model="keeper",
            input="Hello from the SDK",
            instructions="Be brief.",
            metadata={"ticket": "7"},
            max_output_tokens=200,
            temperature=0.2,
        )
        assert first.id.startswith("resp_") and first.status == "completed"
        assert first.output_text.startswith('You said: "Hello from the SDK"')
        assert first.usage is not None and first.usage.output_tokens > 0
        assert first.metadata == {"ticket": "7"} and first.instructions == "Be brief."

        second = await client.responses.create(
            model=account.agent["id"],
            previous_response_id=first.id,
            input=[{"role": "user", "content": "And again"}],
        )
        assert second.previous_response_id == first.id and second.instructions is None
        assert second.output_text.startswith('You said: "And again"')

        again = await client.responses.retrieve(first.id)
        assert again.output_text == first.output_text and again.usage == first.usage
        items = await client.responses.input_items.list(second.id)
        assert [item.type for item in items.data] == ["message"]
        assert items.data[0].content[0].text == "And again"

        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)

        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.create(model="no-such-agent", input="hi")
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad_item:
            await client.responses.create(
                model="keeper", input=[{"type": "item_reference", "id": "msg_1"}]
            )
        assert bad_item.value.param == "input[0].type"
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.responses.create(model="keeper", input="hi", extra_body={"foo": 1})
        assert unknown.value.param == "foo"


async def test_streamed_response_event_order(sdk_account):
    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        stream = await client.responses.create(model="keeper", input="Stream me", stream=True)
        events = [event async for event in stream]
        assert [e.sequence_number for e in events] == list(range(len(events)))
        types = [e.type for e in events]
        assert types[:4] == [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
        ]
        assert types[-4:] == [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text.startswith('You said: "Stream me"')
        assert events[-1].response.output_text == text

        async with client.responses.stream(model="keeper", input="Stream me") as helper:
            async for _ in helper:
                pass
            final = await helper.get_final_response()
        assert final.output_text == text


async def test_function_tool_round_trip(sdk_account):
    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        asked = await client.responses.create(
            model="keeper", input="Use get_weather for Lisbon", tools=[WEATHER]
        )
        [call] = asked.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert "city" in json.loads(call.arguments)
        answered = await client.responses.create(
            model="keeper",
            previous_response_id=asked.id,
            tools=[WEATHER],
            input=[
                {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24C"}
            ],
        )
        assert "Sunny, 24C" in answered.output_text
        with pytest.raises(openai.BadRequestError) as mismatched:
            await client.responses.create(
                model="keeper",
                previous_response_id=asked.id,
                input=[{"type": "function_call_output", "call_id": "call_x", "output": "?"}],
            )
        assert mismatched.value.param == "input[0].call_id"

        stream = await client.responses.create(
            model="keeper", input="Use get_weather for Lisbon", tools=[WEATHER], stream=True
        )
        events = [event async for event in stream]
        types = [e.type for e in events]
        assert "response.function_call_arguments.delta" in types
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert json.loads(done.arguments) == json.loads(call.arguments)
        assert events[-1].response.output[-1].type == "function_call"


async def test_conversations_with_items(sdk_account):
    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        conversation = await client.conversations.create(
            metadata={"topic": "sdk"}, items=[{"role": "user", "content": "I am Ada"}]
        )
        assert conversation.id.startswith("conv_") and conversation.metadata == {"topic": "sdk"}
        response = await client.responses.create(
            model="keeper", conversation=conversation.id, input="Who am I?"
        )
        assert response.conversation is not None and response.conversation.id == conversation.id
        items = [
            item async for item in client.conversations.items.list(conversation.id, order="asc")
        ]
        assert [item.type for item in items] == ["message"] * 3
        assert items[0].content[0].text == "I am Ada"
        assert items[-1].role == "assistant" and items[-1].content[0].text == response.output_text
        created = await client.conversations.items.create(
            conversation.id, items=[{"type": "message", "role": "user", "content": "More"}]
        )
        one = await client.conversations.items.retrieve(
            created.data[0].id, conversation_id=conversation.id
        )
        assert one.content[0].text == "More"
        await client.conversations.items.delete(one.id, conversation_id=conversation.id)
        updated = await client.conversations.update(conversation.id, metadata={"topic": "x"})
        assert updated.metadata == {"topic": "x"}
        deleted = await client.conversations.delete(conversation.id)
        assert deleted.deleted is True
        with pytest.raises(openai.NotFoundError):
            await client.conversations.retrieve(conversation.id)

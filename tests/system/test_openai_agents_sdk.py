"""The OpenAI Agents SDK, unmodified, with its default ``OpenAIResponsesModel`` pointed at
the gateway's /v1: the AgentMesh agent is the model, the SDK's agent runs its own tools.
Tracing export is off, as for a user without an OpenAI key."""

from __future__ import annotations

import agents
import openai
from agents import Agent, OpenAIResponsesModel, Runner, function_tool

agents.set_tracing_disabled(True)
CALLS: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    CALLS.append(city)
    return f"Sunny in {city}"


def sdk_agent(client: openai.AsyncOpenAI, **options) -> Agent:
    model = OpenAIResponsesModel(model="keeper", openai_client=client)
    return Agent(name="Helper", instructions="Help.", model=model, **options)


async def test_agents_sdk_run_with_a_function_tool(sdk_account):
    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        agent = sdk_agent(client, tools=[get_weather])
        CALLS.clear()
        result = await Runner.run(agent, "Use get_weather for Lisbon")
        assert CALLS, "the SDK never ran the tool the model called"
        assert f'The get_weather tool returned: "Sunny in {CALLS[0]}"' in result.final_output
        assert result.last_response_id and result.last_response_id.startswith("resp_")


async def test_agents_sdk_streamed_run(sdk_account):
    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        result = Runner.run_streamed(sdk_agent(client), "Hello, streaming agent")
        deltas = [
            event.data.delta
            async for event in result.stream_events()
            if event.type == "raw_response_event"
            and event.data.type == "response.output_text.delta"
        ]
        assert deltas and "".join(deltas) == result.final_output
        assert result.final_output.startswith('You said: "Hello, streaming agent"')


async def test_agents_sdk_conversations_session_across_two_runs(sdk_account):
    from agents.memory import OpenAIConversationsSession

    account = await sdk_account()
    async with openai.AsyncOpenAI(base_url=account.base_url, api_key=account.api_key) as client:
        session = OpenAIConversationsSession(openai_client=client)
        agent = sdk_agent(client)
        first = await Runner.run(agent, "My name is Ada", session=session)
        assert first.final_output.startswith('You said: "My name is Ada"')
        second = await Runner.run(agent, "What is my name?", session=session)
        assert second.final_output.startswith('You said: "What is my name?"')
        items = await session.get_items()
        texts = [item["content"][0]["text"] for item in items]
        assert texts == [
            "My name is Ada",
            first.final_output,
            "What is my name?",
            second.final_output,
        ]
        # The second run saw the first: the session's items went in as input.
        assert (
            second.raw_responses[0].usage.input_tokens > first.raw_responses[0].usage.input_tokens
        )
        await session.clear_session()

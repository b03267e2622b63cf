"""The chat model layer: offline model, token counting, memory window, real-HTTP streaming."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Sequence

import httpx
import openai
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool

from agentmesh.chat.llm import (
    TITLE_INSTRUCTION,
    ModelCallFailed,
    ModelMisconfigured,
    OfflineChatModel,
    StreamInterrupted,
    build_prompt,
    count_message_tokens,
    count_tokens,
    resolve_chat_model,
    stream_with_retry,
    turns_to_summarize,
)
from agentmesh.chat.llm.tokens import uses_tiktoken
from agentmesh.shared.outbound import OutboundPolicy
from agentmesh.shared.testing.openai_server import FakeOpenAI


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression with + - * / and parentheses."""
    if not re.fullmatch(r"[\d\s+\-*/().]+", expression):
        raise ValueError("unsupported expression")
    return str(eval(expression))  # noqa: S307 - digits and operators only


@tool
def current_time(timezone: str = "UTC") -> str:
    """The current time in an IANA timezone."""
    return f"12:00 in {timezone}"


@tool
def knowledge_search(query: str) -> str:
    """Search the agent's knowledge bases."""
    return "refunds take 5 days"


async def stream_all(
    model: BaseChatModel, messages: Sequence[BaseMessage], **options: float
) -> tuple[list[AIMessageChunk], AIMessageChunk]:
    chunks = [c async for c in stream_with_retry(model, messages, base_delay=0.01, **options)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return chunks, merged


# -- offline model ---------------------------------------------------------------------


async def test_offline_model_streams_the_same_words_with_usage() -> None:
    messages = [SystemMessage("Be brief."), HumanMessage("What is the capital of France?")]
    model = OfflineChatModel()
    first, merged = await stream_all(model, messages)
    second, _ = await stream_all(model, messages)

    assert [c.content for c in first] == [c.content for c in second]
    words = [c.content for c in first if c.content]
    assert len(words) > 5 and all(len(str(w).split()) == 1 for w in words)
    text = str(merged.content)
    assert text.startswith('You said: "What is the capital of France?"')
    assert merged.usage_metadata == {
        "input_tokens": count_message_tokens(messages),
        "output_tokens": count_tokens(text),
        "total_tokens": count_message_tokens(messages) + count_tokens(text),
    }
    invoked = await model.ainvoke(messages)
    assert invoked.content == text and invoked.usage_metadata == merged.usage_metadata


@pytest.mark.parametrize(
    ("question", "name", "args"),
    [
        (
            "Please use the calculator to work out (12 + 3) * 4.",
            "calculator",
            {"expression": "(12 + 3) * 4"},
        ),
        (
            "What does current_time say for Europe/Paris?",
            "current_time",
            {"timezone": "Europe/Paris"},
        ),
        ("What does current time say?", "current_time", {"timezone": "UTC"}),
        (
            "use knowledge_search: refund policy",
            "knowledge_search",
            {"query": "use knowledge_search: refund policy"},
        ),
    ],
)
async def test_offline_model_calls_the_named_tool(question: str, name: str, args: dict) -> None:
    model = OfflineChatModel().bind_tools([calculator, current_time, knowledge_search])
    chunks, merged = await stream_all(model, [HumanMessage(question)])

    assert any(c.tool_call_chunks for c in chunks)
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [(name, args)]
    assert merged.content == "" and merged.usage_metadata["output_tokens"] > 0


async def test_offline_model_answers_with_the_tool_result_and_stops_calling() -> None:
    model = OfflineChatModel().bind_tools([calculator])
    history: list[BaseMessage] = [HumanMessage("use calculator for 6 * 7")]
    call = (await model.ainvoke(history)).tool_calls[0]
    result = calculator.invoke(call["args"])
    history += [AIMessage("", tool_calls=[call]), ToolMessage(result, tool_call_id=call["id"])]

    _, answer = await stream_all(model, history)

    assert result == "42"
    assert answer.tool_calls == []
    assert '"42"' in str(answer.content) and "calculator" in str(answer.content)


async def test_offline_model_without_a_named_tool_just_answers() -> None:
    model = OfflineChatModel().bind_tools([calculator])
    answer = await model.ainvoke([HumanMessage("Tell me a story")])
    assert answer.tool_calls == [] and "Tell me a story" in str(answer.content)


async def test_offline_model_titles_a_conversation() -> None:
    messages = [SystemMessage(TITLE_INSTRUCTION), HumanMessage("how do I reset my router?")]
    assert (await OfflineChatModel().ainvoke(messages)).content == "How do I reset my router"
    instructions = SystemMessage("You are a chat assistant. Give each answer a title.")
    answer = await OfflineChatModel().ainvoke([instructions, HumanMessage("hello")])
    assert str(answer.content).startswith('You said: "hello"')


# -- tokens and memory window ----------------------------------------------------------


def test_token_counts() -> None:
    assert count_tokens("") == 0
    assert count_tokens("internationalization") > count_tokens("nation")
    assert count_tokens("Hello, world!") < count_tokens("Hello, world! " * 10)
    one = [HumanMessage("hi")]
    assert count_message_tokens(one) == 4 + count_tokens("hi") + 3
    if not uses_tiktoken():  # the documented approximation
        assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
        assert count_tokens("1234567") == 3
        assert count_tokens("你好世界") == 4


def _long_conversation() -> list[BaseMessage]:
    history: list[BaseMessage] = []
    for turn in range(40):
        history.append(HumanMessage(f"Question {turn}: " + "tell me more about it " * (turn % 7)))
        if turn % 5 == 2:
            call = {"name": "calculator", "args": {"expression": f"{turn} * 2"}, "id": f"c{turn}"}
            history.append(AIMessage("", tool_calls=[call]))
            history.append(ToolMessage(str(turn * 2), tool_call_id=f"c{turn}"))
        history.append(AIMessage(f"Answer {turn}. " + "Here is a longer reply. " * (turn % 11)))
    history.append(HumanMessage("And finally: " + "a very long question " * 200))
    return history


def _check_prompt(prompt: list[BaseMessage], history: list[BaseMessage], window: int) -> None:
    assert count_message_tokens(prompt) <= window
    assert isinstance(prompt[0], SystemMessage) and prompt[0].content.startswith("You help.")
    latest = prompt[-1]
    assert isinstance(latest, HumanMessage)
    assert history[-1].content.startswith(str(latest.content).rstrip("…"))
    kept = prompt[1:-1]
    assert kept == history[len(history) - 1 - len(kept) : -1]  # a suffix: no gaps
    for index, message in enumerate(kept):
        if isinstance(message, ToolMessage):
            assert isinstance(kept[index - 1], AIMessage) and index > 0
            assert kept[index - 1].tool_calls[0]["id"] == message.tool_call_id
        if isinstance(message, AIMessage) and message.tool_calls:
            assert isinstance(kept[index + 1], ToolMessage)


def test_build_prompt_never_exceeds_the_window() -> None:
    history = _long_conversation()
    previous_kept = -1
    for window in range(32, 4000, 13):
        for summary in (None, "They talked about numbers. " * (window % 13)):
            prompt = build_prompt("You help.", history, window_tokens=window, summary=summary)
            _check_prompt(prompt, history, window)
            dropped = turns_to_summarize(
                "You help.", history, window_tokens=window, summary=summary
            )
            assert dropped + prompt[1:-1] == history[:-1]
        kept = len(build_prompt("You help.", history, window_tokens=window))
        assert kept >= previous_kept
        previous_kept = kept
    full = build_prompt("You help.", history, window_tokens=100_000)
    assert full[1:] == history
    assert turns_to_summarize("You help.", history, window_tokens=100_000) == []


def test_build_prompt_truncates_an_oversized_latest_message_and_summarizes_the_rest() -> None:
    history = _long_conversation()
    prompt = build_prompt("You help.", history, window_tokens=120, summary="Earlier: numbers.")
    assert len(prompt) == 2 and count_message_tokens(prompt) <= 120
    assert str(prompt[1].content).endswith("…")
    assert "Earlier: numbers." in str(prompt[0].content)
    assert turns_to_summarize("You help.", history, window_tokens=120) == history[:-1]


# -- real providers over real HTTP -----------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(api_key="sk-test-key-0123456789") as server:
        yield server


def openai_model(fake: FakeOpenAI, *, api_key: str | None = None, timeout: float = 5.0):
    return resolve_chat_model(
        provider_kind="openai",
        model="fake-model",
        base_url=fake.base_url,
        api_key=api_key or fake.api_key,
        temperature=0.0,
        max_tokens=64,
        timeout=timeout,
        policy=OutboundPolicy(allowed_private=(httpx.URL(fake.base_url).netloc.decode(),)),
    )


def test_resolve_offline_and_unknown_kinds() -> None:
    for kind in (None, "offline"):
        model = resolve_chat_model(
            provider_kind=kind,
            model="offline",
            base_url=None,
            api_key=None,
            temperature=None,
            max_tokens=None,
            timeout=5,
        )
        assert isinstance(model, OfflineChatModel)
    with pytest.raises(ModelMisconfigured):
        resolve_chat_model(
            provider_kind="nope",
            model="x",
            base_url=None,
            api_key=None,
            temperature=None,
            max_tokens=None,
            timeout=5,
        )


async def test_openai_streams_text_token_by_token_with_usage(fake: FakeOpenAI) -> None:
    fake.reply = "The quick brown fox jumps"
    chunks, merged = await stream_all(openai_model(fake), [HumanMessage("Hi")])

    assert merged.content == "The quick brown fox jumps"
    assert len([c for c in chunks if c.content]) == 5
    assert merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == 5
    sent = fake.requests[-1].body or {}
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert fake.chat_attempts == 1


async def test_openai_streams_tool_calls_and_then_uses_the_result(fake: FakeOpenAI) -> None:
    model = openai_model(fake).bind_tools([calculator])
    fake.tool_call = {"name": "calculator", "arguments": {"expression": "(12 + 3) * 4"}}
    chunks, merged = await stream_all(model, [HumanMessage("compute it")])

    assert len([c for c in chunks if c.tool_call_chunks]) > 2  # arguments arrive in pieces
    call = merged.tool_calls[0]
    assert (call["name"], call["args"]) == ("calculator", {"expression": "(12 + 3) * 4"})

    fake.tool_call = None
    history = [
        HumanMessage("call calculator"),
        AIMessage("", tool_calls=[call]),
        ToolMessage(calculator.invoke(call["args"]), tool_call_id=call["id"]),
    ]
    _, answer = await stream_all(model, history)
    assert "60" in str(answer.content) and answer.tool_calls == []


@pytest.mark.parametrize("kind", ["429", "500", "timeout"])
async def test_transient_failure_is_retried_then_succeeds(fake: FakeOpenAI, kind: str) -> None:
    fake.reply = "recovered fine"
    fake.fail_next(kind)
    _, merged = await stream_all(openai_model(fake, timeout=0.5), [HumanMessage("Hi")])
    assert merged.content == "recovered fine"
    assert fake.chat_attempts == 2


async def test_retries_stop_after_the_last_attempt(fake: FakeOpenAI) -> None:
    fake.fail_next("500", times=5)
    with pytest.raises(ModelCallFailed) as failed:
        await stream_all(openai_model(fake), [HumanMessage("Hi")], attempts=3)
    assert failed.value.type == "model-unavailable" and failed.value.provider_status == 500
    assert fake.chat_attempts == 3


async def test_unauthorized_is_not_retried_and_hides_the_key(fake: FakeOpenAI) -> None:
    wrong = "sk-wrong-secret-987654321"
    with pytest.raises(ModelCallFailed) as failed:
        await stream_all(openai_model(fake, api_key=wrong), [HumanMessage("Hi")])
    assert failed.value.type == "model-auth-failed" and failed.value.provider_status == 401
    assert wrong not in str(failed.value) and wrong not in str(failed.value.problem())
    assert fake.chat_attempts == 1


async def test_bad_request_is_not_retried(fake: FakeOpenAI) -> None:
    with pytest.raises(ModelCallFailed) as failed:
        await stream_all(openai_model(fake), [])
    assert failed.value.type == "model-rejected-request"
    assert "messages" in str(failed.value.detail)
    assert fake.chat_attempts == 1


@pytest.mark.parametrize("reply", ["", "one two three four five"])
async def test_malformed_chunk_is_a_clean_error(fake: FakeOpenAI, reply: str) -> None:
    fake.reply = reply
    fake.fail_next("malformed")
    with pytest.raises(ModelCallFailed) as failed:
        await stream_all(openai_model(fake), [HumanMessage("Hi")])
    if reply:  # tokens had already been streamed
        assert isinstance(failed.value, StreamInterrupted)
        assert failed.value.cause_type == "model-bad-response"
    else:
        assert failed.value.type == "model-bad-response"
    assert fake.chat_attempts == 1


async def test_stream_dropped_after_tokens_is_interrupted_not_retried(fake: FakeOpenAI) -> None:
    fake.reply = "one two three four five"
    fake.fail_next("error_after_tokens")
    received: list[str] = []
    with pytest.raises(StreamInterrupted) as failed:
        async for chunk in stream_with_retry(openai_model(fake), [HumanMessage("Hi")]):
            received.append(str(chunk.content))
    assert "".join(received) == "one two"
    assert failed.value.problem()["type"].endswith("/model-stream-interrupted")
    assert fake.chat_attempts == 1


async def test_fake_server_lists_models_and_embeds_deterministically(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0)
    assert [m.id async for m in client.models.list()] == ["fake-model"]
    first = await client.embeddings.create(model="e", input=["a", "b"], dimensions=16)
    again = await client.embeddings.create(model="e", input="a", dimensions=16)
    vector = first.data[0].embedding
    assert len(vector) == 16 and math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-6)
    assert again.data[0].embedding == vector != first.data[1].embedding
    await client.close()


async def test_requests_skip_the_sdk_transform_but_send_what_the_sdk_would(
    fake: FakeOpenAI,
) -> None:
    """A streamed call posts LangChain's payload as is (``DirectCompletions``); the SDK's
    own ``create`` (transform included) must put the very same JSON on the wire."""
    from agentmesh.chat.llm.direct_client import DirectCompletions

    model = openai_model(fake)
    assert isinstance(model.async_client, DirectCompletions)
    history = [
        SystemMessage("Be brief."),
        HumanMessage([{"type": "text", "text": "What is"}, {"type": "text", "text": " 6*7?"}]),
        AIMessage(
            "", tool_calls=[{"id": "c1", "name": "calculator", "args": {"expression": "6*7"}}]
        ),
        ToolMessage("42", tool_call_id="c1"),
        AIMessage("It is 42."),
        HumanMessage("And the time in Paris?"),
    ]
    bound = model.bind_tools([calculator, current_time], tool_choice="auto")
    await stream_all(bound, history)
    direct = [r.body for r in fake.requests[-1:]]

    ours = model.async_client
    model.async_client = ours._completions  # the SDK's own create, transform on
    try:
        await stream_all(bound, history)
    finally:
        model.async_client = ours  # the model is cached: leave it as it was
    assert direct == [r.body for r in fake.requests[-1:]]
    assert direct[0]["stream"] is True
    assert [t["function"]["name"] for t in direct[0]["tools"]] == ["calculator", "current_time"]
    assert [m["role"] for m in direct[0]["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]


@pytest.mark.parametrize(
    ("choice", "anthropic"),
    [
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "calculator"}},
            {"type": "tool", "name": "calculator"},
        ),
    ],
)
def test_an_openai_tool_choice_is_given_to_anthropic_in_its_own_form(choice, anthropic) -> None:
    from agentmesh.chat.llm.resolve import tool_choice_for

    model = resolve_chat_model(
        provider_kind="anthropic",
        model="claude-sonnet-4-5",
        api_key="sk-ant-test-0123456789",
        timeout=5,
    )
    bound = model.bind_tools([calculator], tool_choice=tool_choice_for("anthropic", choice))
    assert bound.kwargs["tool_choice"] == anthropic
    assert tool_choice_for("openai", choice) == choice  # OpenAI's own form, unchanged
    assert (
        tool_choice_for("ollama", choice) is None and tool_choice_for("anthropic", "auto") is None
    )

"""The built-in offline chat model: no network, no key, the same answer every time.

It echoes the latest user message with a short continuation and streams it word by word.
It reports usage counted with ``agentmesh.chat.llm.tokens``. With tools bound, it calls a
tool when the user names one. After a tool result, it answers by quoting that result.
Tests drive the whole chat pipeline with it, and ``agentmesh up`` works offline with it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field

from agentmesh.chat.llm.json_reply import json_reply
from agentmesh.chat.llm.tokens import count_message_tokens, count_tokens, message_text

OFFLINE_MODEL = "offline"
TITLE_INSTRUCTION = (
    "Write a short title, at most six words, for this conversation. Reply with the title only."
)
_CONTINUATIONS = (
    "I am the offline model, so this reply is made locally and is the same every time.",
    "This answer comes from the built-in offline model: deterministic, and with no network.",
    "Configure a model provider on this agent to get a real answer instead of this echo.",
)
_EXPRESSION = re.compile(r"[\d.\s()+\-*/%^]*\d[\d.\s()+\-*/%^]*")
_TIMEZONE = re.compile(r"\b(?:[A-Z][A-Za-z]+/)+[A-Z][A-Za-z_\-]+\b|\b(?:UTC|GMT)\b")
_TITLE_REQUEST = re.compile(
    r"\btitle\b[^.\n]{0,40}\b(?:conversation|chat)\b|\b(?:conversation|chat)\b[^.\n]{0,20}\btitle\b",
    re.IGNORECASE,
)
_EXPLICIT_TOOL = re.compile(r"\b(?:use|call)\s+(?:the\s+)?([\w\-]+)", re.IGNORECASE)


@dataclass(frozen=True)
class _Reply:
    text: str
    call: dict[str, Any] | None = None  # {"name", "args", "id"}
    finish_reason: str = "stop"


class OfflineChatModel(BaseChatModel):
    """Deterministic local chat model (provider kind ``offline``, model name ``offline``)."""

    model_config = ConfigDict(populate_by_name=True)

    model_name: str = Field(default=OFFLINE_MODEL, alias="model")
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "agentmesh-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "max_tokens": self.max_tokens}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (any form LangChain accepts); ``tool_choice`` may force a call."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = self._reply(messages, stop, kwargs)
        calls = [tool_call(**reply.call)] if reply.call else []
        message = AIMessage(
            content=reply.text,
            tool_calls=calls,
            usage_metadata=self._usage(messages, reply, kwargs),
            response_metadata=self._metadata(reply),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks(messages, stop, kwargs):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk
            await asyncio.sleep(0)  # let other streams interleave, as a network model would

    def _chunks(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> list[ChatGenerationChunk]:
        reply = self._reply(messages, stop, kwargs)
        chunks: list[AIMessageChunk] = []
        if reply.call:
            args = json.dumps(reply.call["args"])
            call = tool_call_chunk(name=reply.call["name"], args=args, id=reply.call["id"], index=0)
            chunks.append(AIMessageChunk(content="", tool_call_chunks=[call]))
        chunks.extend(AIMessageChunk(content=word) for word in re.findall(r"\S+\s*", reply.text))
        last = AIMessageChunk(
            content="",
            usage_metadata=self._usage(messages, reply, kwargs),
            response_metadata=self._metadata(reply),
            chunk_position="last",
        )
        return [ChatGenerationChunk(message=chunk) for chunk in [*chunks, last]]

    def _reply(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> _Reply:
        reply = plan_reply(messages, kwargs.get("tools") or [], kwargs.get("tool_choice"))
        text, finish = reply.text, reply.finish_reason
        if kwargs.get("response_format") and not reply.call:  # JSON that fits the format
            text = json.dumps(json_reply(kwargs["response_format"], text))
        for word in stop or []:
            if word and word in text:
                text = text[: text.index(word)]
        if self.max_tokens is not None and count_tokens(text) > self.max_tokens:
            words = text.split(" ")
            while words and count_tokens(" ".join(words)) > self.max_tokens:
                words.pop()
            text, finish = " ".join(words), "length"
        return _Reply(text=text, call=reply.call, finish_reason=finish)

    def _usage(
        self, messages: list[BaseMessage], reply: _Reply, kwargs: dict[str, Any]
    ) -> UsageMetadata:
        tools = kwargs.get("tools")
        input_tokens = count_message_tokens(messages) + (
            count_tokens(json.dumps(tools)) if tools else 0
        )
        output_tokens = count_tokens(reply.text)
        if reply.call:
            output_tokens += count_tokens(reply.call["name"])
            output_tokens += count_tokens(json.dumps(reply.call["args"]))
        return UsageMetadata(
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_tokens=input_tokens + output_tokens,
        )

    def _metadata(self, reply: _Reply) -> dict[str, Any]:
        finish = "tool_calls" if reply.call else reply.finish_reason
        return {"model_name": self.model_name, "finish_reason": finish}


def plan_reply(
    messages: Sequence[BaseMessage],
    tools: Sequence[dict[str, Any]] = (),
    tool_choice: str | dict[str, Any] | None = None,
) -> _Reply:
    """What the offline model answers to ``messages`` (tools in OpenAI format)."""
    if messages and isinstance(messages[-1], ToolMessage):
        return _Reply(text=_answer_from_tools(messages))
    title = _title(messages)
    if title is not None:
        return _Reply(text=title)
    humans = [m for m in messages if isinstance(m, HumanMessage)]
    said = message_text(humans[-1]).strip() if humans else ""
    function = _choose_tool(said, tools, tool_choice)
    if function is not None:
        args = _infer_arguments(function, said)
        digest = hashlib.sha256(f"{function['name']}|{len(messages)}|{said}".encode())
        call = {"name": function["name"], "args": args, "id": "call_" + digest.hexdigest()[:16]}
        return _Reply(text="", call=call, finish_reason="tool_calls")
    if not said:
        return _Reply(text="Hello! I am the offline model. Say something and I will echo it.")
    words = said.split()
    snippet = " ".join(words[:40]) + (" …" if len(words) > 40 else "")
    pick = int(hashlib.sha256(said.encode()).hexdigest(), 16) % len(_CONTINUATIONS)
    return _Reply(text=f'You said: "{snippet}". {_CONTINUATIONS[pick]}')


def _answer_from_tools(messages: Sequence[BaseMessage]) -> str:
    results: list[ToolMessage] = []
    for message in reversed(messages):
        if not isinstance(message, ToolMessage):
            break
        results.insert(0, message)
    names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, AIMessage):
            names.update({call["id"] or "": call["name"] for call in message.tool_calls})
    parts = [
        f"The {result.name or names.get(result.tool_call_id, 'tool')} tool returned: "
        f'"{message_text(result).strip()}".'
        for result in results
    ]
    return " ".join(parts)


def _title(messages: Sequence[BaseMessage]) -> str | None:
    """A short title when the prompt asks to title the conversation, else None."""

    def asks_for_title(message: BaseMessage) -> bool:
        return _TITLE_REQUEST.search(message_text(message)) is not None

    humans = [m for m in messages if isinstance(m, HumanMessage)]
    if any(isinstance(m, SystemMessage) and asks_for_title(m) for m in messages):
        source = message_text(humans[0]) if humans else ""
    elif humans and asks_for_title(humans[-1]):
        lines = message_text(humans[-1]).splitlines()
        rest = [line for line in lines if not _TITLE_REQUEST.search(line)]
        source = " ".join(rest) if rest else ""
    else:
        return None
    source = re.sub(r"\b(?:User|Assistant|Human|AI)\s*:", " ", source)
    words = [w.strip(".,;:!?\"'()[]") for w in source.split()]
    title = " ".join(w for w in words if w)[:80]
    title = " ".join(title.split()[:6])
    return title[:1].upper() + title[1:] if title else "New conversation"


def _choose_tool(
    text: str, tools: Sequence[dict[str, Any]], tool_choice: str | dict[str, Any] | None
) -> dict[str, Any] | None:
    functions = {tool["function"]["name"]: tool["function"] for tool in tools if "function" in tool}
    if not functions or tool_choice == "none":
        return None
    forced = tool_choice
    if isinstance(tool_choice, dict):
        forced = (tool_choice.get("function") or {}).get("name") or tool_choice.get("name")
    if isinstance(forced, str) and forced in functions:
        return functions[forced]
    lowered = text.lower()
    spoken = {name: name.lower().replace("_", " ") for name in functions}
    for match in _EXPLICIT_TOOL.finditer(lowered):  # "use X" wins over a mere mention
        named = [name for name in functions if match.group(1) == name.lower()]
        if named:
            return functions[named[0]]
    positions = []
    for name, words in spoken.items():
        found = re.search(rf"\b(?:{re.escape(name.lower())}|{re.escape(words)})\b", lowered)
        if found:
            positions.append((found.start(), name))
    if positions:
        return functions[min(positions)[1]]
    if tool_choice in ("any", "required"):
        return next(iter(functions.values()))
    return None


def _infer_arguments(function: dict[str, Any], text: str) -> dict[str, Any]:
    """Arguments inferred from the message, following the tool's JSON schema."""
    schema = function.get("parameters") or {}
    properties: dict[str, Any] = schema.get("properties") or {}
    required: list[str] = list(schema.get("required") or [])
    strings = [p for p in [*required, *properties] if properties.get(p, {}).get("type") == "string"]
    name = function["name"].lower()
    value: str | None = None
    preferred: tuple[str, ...] = ()
    if "calc" in name or "math" in name:
        value, preferred = _expression(text), ("expression", "expr", "input")
    elif "time" in name or "clock" in name:
        zone = _TIMEZONE.search(text)
        value, preferred = (zone.group(0) if zone else "UTC"), ("timezone", "tz", "zone")
    elif "search" in name or "knowledge" in name or "retriev" in name:
        value, preferred = text, ("query", "q", "question")
    else:
        first_required = next((p for p in required if p in strings), None)
        return {first_required: text} if first_required else {}
    target = next((p for p in preferred if p in properties), strings[0] if strings else None)
    return {target: value} if target else {}


def _expression(text: str) -> str:
    candidates = [m.group(0).strip().rstrip(".").strip() for m in _EXPRESSION.finditer(text)]
    with_operator = [c for c in candidates if re.search(r"\d\s*[-+*/%^]\s*[\d(]", c)]
    best = max(with_operator or candidates or [text], key=len).strip()
    while best.count(")") > best.count("(") and best.endswith(")"):
        best = best[:-1].rstrip()
    while best.count("(") > best.count(")") and best.startswith("("):
        best = best[1:].lstrip()
    return best

"""A Chat Completions ``response_format`` in the form each provider takes.

OpenAI, Azure OpenAI and Mistral take ``response_format`` as it is (``json_object`` or
``json_schema``); Ollama takes ``format`` (``"json"`` or the schema itself); the offline
model answers it itself (``json_reply``). Anthropic has no such parameter: the schema
becomes a tool the model is made to call, and the tool call's arguments (streamed as
``input_json_delta``) are turned back into the answer's text, so the run streams and
stores the JSON document as any other answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig

#: Providers whose API takes ``response_format`` in OpenAI's own form.
_AS_IS = ("offline", "openai", "azure_openai", "mistral")
_NAME = re.compile(r"[^a-zA-Z0-9_-]")


def with_response_format(bound: Any, provider: str, response_format: dict[str, Any] | None) -> Any:
    """``bound`` (a model, or a model bound to tools) asked to answer in the format."""
    if not response_format or response_format.get("type") not in ("json_object", "json_schema"):
        return bound
    if provider == "ollama":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if response_format["type"] == "json_schema" else None
        return bound.bind(format=schema or "json")
    if provider == "anthropic":
        return _anthropic(bound, response_format)
    if provider not in _AS_IS:  # pragma: no cover - every provider kind is listed above
        raise ValueError(f"no response_format translation for {provider!r}")
    return bound.bind(response_format=response_format)


def answer_tool(response_format: dict[str, Any]) -> dict[str, Any]:
    """The Anthropic tool whose input is the answer: the schema's, or any JSON object."""
    spec = response_format.get("json_schema") or {}
    name = _NAME.sub("_", str(spec.get("name") or "json_answer"))[:64] or "json_answer"
    schema = spec.get("schema") if response_format.get("type") == "json_schema" else None
    schema = dict(schema or {"type": "object", "additionalProperties": True})
    if schema.get("type") != "object":  # a tool's input is an object: wrap anything else
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    description = spec.get("description") or "Give the answer as this tool's input."
    return {"name": name, "description": description, "input_schema": schema}


def _anthropic(bound: Any, response_format: dict[str, Any]) -> Runnable[Any, Any]:
    tool = answer_tool(response_format)
    if isinstance(bound, RunnableBinding):  # already bound to the run's tools
        model, kwargs = bound.bound, dict(bound.kwargs)
    else:
        model, kwargs = bound, {}
    others = list(kwargs.get("tools") or [])
    # Alone, the answer tool is forced; beside other tools, some tool call is, the answer
    # tool's ending the run.
    choice = {"type": "tool", "name": tool["name"]} if not others else {"type": "any"}
    kwargs.update(tools=[*others, tool], tool_choice=choice)
    return _ToolAsText(model.bind(**kwargs), tool["name"])


class _ToolAsText(Runnable[Any, Any]):
    """Streams ``inner``'s chunks, with the answer tool's arguments as the text."""

    def __init__(self, inner: Runnable[Any, Any], name: str) -> None:
        self.inner, self.name = inner, name

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        message = self.inner.invoke(input, config, **kwargs)
        answer = next((c for c in message.tool_calls if c["name"] == self.name), None)
        if answer is None:
            return message
        others = [c for c in message.tool_calls if c["name"] != self.name]
        meta = dict(message.response_metadata or {})
        if not others and meta.get("stop_reason") == "tool_use":
            meta["stop_reason"] = "end_turn"
        return AIMessage(
            content=json.dumps(answer["args"]),
            tool_calls=others,
            usage_metadata=message.usage_metadata,
            response_metadata=meta,
            id=message.id,
        )

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        full: AIMessageChunk | None = None
        async for chunk in self.astream(input, config, **kwargs):
            full = chunk if full is None else full + chunk
        return full

    async def astream(
        self, input: list[BaseMessage], config: RunnableConfig | None = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        answering: set[int | None] = set()  # the indexes of the answer tool's call chunks
        other_calls = False
        async for chunk in self.inner.astream(input, config, **kwargs):
            text, kept = "", []
            for call in chunk.tool_call_chunks or []:
                if call.get("name") == self.name:
                    answering.add(call.get("index"))
                if call.get("index") in answering:
                    text += call.get("args") or ""
                else:
                    kept.append(call)
            other_calls = other_calls or bool(kept)
            meta = dict(chunk.response_metadata or {})
            if meta.get("stop_reason") == "tool_use" and answering and not other_calls:
                meta["stop_reason"] = "end_turn"  # the answer is the text, not a tool call
            yield AIMessageChunk(
                content=text or (chunk.text if isinstance(chunk.text, str) else chunk.text()),
                tool_call_chunks=kept,
                usage_metadata=chunk.usage_metadata,
                response_metadata=meta,
                id=chunk.id,
            )

"""Input items: checked, given ids, and turned into the LangChain messages of a prompt.

Items we take: ``message`` (``input_text`` / ``output_text`` / ``refusal`` parts, or a
string), ``function_call`` and ``function_call_output`` (joined by ``call_id``),
``reasoning`` (kept, not sent: none of our providers takes it back), and the server-tool
items we produce (``mcp_call``, ``file_search_call``), which replay as a tool call and its
result. Anything else is a 400 naming the item.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from agentmesh.chat.openai_compat.service import InvalidRequest

ROLES = ("user", "assistant", "system", "developer")
TEXT_PARTS = ("input_text", "output_text", "refusal")
PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "mcp_call": "mcp",
    "file_search_call": "fs",
    "mcp_approval_request": "mcpr",
    "mcp_approval_response": "mcpa",
}


def item_id(kind: str) -> str:
    return f"{PREFIX[kind]}_{uuid.uuid4().hex}"


def _bad(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(why, extra={"param": param})


def _parts(content: Any, role: str, param: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        # Typed for the loop below too, where a part's "type" may be anything.
        kind: str | None = "output_text" if role == "assistant" else "input_text"
        part: dict[str, Any] = {"type": kind, "text": content}
        return [part | {"annotations": []} if kind == "output_text" else part]
    if not isinstance(content, list):
        raise _bad(f"{param}.content", "A message's content is a string or a list of parts.")
    parts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in TEXT_PARTS:
            raise _bad(
                f"{param}.content[{index}].type",
                f"Content part {kind!r} is not supported: text parts only.",
            )
        key = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(key), str):
            raise _bad(f"{param}.content[{index}].{key}", f"A {kind} part needs its {key}.")
        kept = {"type": kind, key: part[key]}
        if kind == "output_text":
            kept["annotations"] = part.get("annotations") or []
        parts.append(kept)
    return parts


def _output_text(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(
            part.get("text", "")
            for part in output
            if isinstance(part, dict) and part.get("type") in ("input_text", "output_text")
        )
    raise _bad(f"{param}.output", "A function_call_output's output is a string or text parts.")


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _bad(f"{param}.{key}", f"A {item.get('type')} item needs {key}.")
    return value


def normalize(raw: str | list[dict[str, Any]] | None, param: str = "input") -> list[dict[str, Any]]:
    """The request's input as stored items, each with an id (kept when the client gave one)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": raw}]
    items: list[dict[str, Any]] = []
    for index, item in enumerate(raw):
        where = f"{param}[{index}]"
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ROLES:
                raise _bad(f"{where}.role", f"Message role {role!r} is not one of {ROLES}.")
            items.append(
                {
                    "type": "message",
                    "id": item.get("id") or item_id("message"),
                    "role": role,
                    "status": item.get("status") or "completed",
                    "content": _parts(item.get("content"), role, where),
                }
            )
        elif kind == "function_call":
            arguments = item.get("arguments") or "{}"
            try:
                parsed = json.loads(arguments)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                raise _bad(f"{where}.arguments", "Function call arguments must be a JSON object.")
            items.append(
                {
                    "type": "function_call",
                    "id": item.get("id") or item_id(kind),
                    "call_id": _string(item, "call_id", where),
                    "name": _string(item, "name", where),
                    "arguments": arguments,
                    "status": item.get("status") or "completed",
                }
            )
        elif kind == "function_call_output":
            items.append(
                {
                    "type": kind,
                    "id": item.get("id") or item_id(kind),
                    "call_id": _string(item, "call_id", where),
                    "output": _output_text(item.get("output"), where),
                    "status": item.get("status") or "completed",
                }
            )
        elif kind in ("reasoning", "mcp_call", "file_search_call", "mcp_approval_request"):
            items.append({**item, "id": item.get("id") or item_id(kind)})
        elif kind == "mcp_approval_response":  # (responses.approvals)
            if not isinstance(item.get("approve"), bool):
                raise _bad(f"{where}.approve", "An mcp_approval_response needs approve: bool.")
            reason = item.get("reason")
            items.append(
                {
                    "type": kind,
                    "id": item.get("id") or item_id(kind),
                    "approval_request_id": _string(item, "approval_request_id", where),
                    "approve": item["approve"],
                    "reason": reason if isinstance(reason, str) else None,
                }
            )
        else:
            raise _bad(f"{where}.type", f"Input item type {kind!r} is not supported.")
    return items


def check_calls(history: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    """Every function_call_output answers a function_call made before it (400 otherwise)."""
    calls = {item["call_id"] for item in history if item.get("type") == "function_call"}
    for index, item in enumerate(new):
        if item["type"] == "function_call":
            calls.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in calls:
            raise _bad(
                f"input[{index}].call_id",
                f"No tool call found for function call output with call_id {item['call_id']}.",
            )


def _text_of(item: dict[str, Any]) -> str:
    return "".join(part.get("text") or part.get("refusal") or "" for part in item["content"])


def to_langchain(items: list[dict[str, Any]]) -> tuple[str, list[BaseMessage]]:
    """The system text (system and developer messages) and the rest as LangChain messages.

    Consecutive function calls (after an assistant message or not) are one assistant turn
    with several tool calls, as providers expect them."""
    system: list[str] = []
    messages: list[BaseMessage] = []

    def calling() -> AIMessage:
        last = messages[-1] if messages else None
        if isinstance(last, AIMessage):
            return last
        message = AIMessage("", tool_calls=[])
        messages.append(message)
        return message

    for item in items:
        kind = item["type"]
        if kind == "message":
            if item["role"] in ("system", "developer"):
                system.append(_text_of(item))
            elif item["role"] == "user":
                messages.append(HumanMessage(_text_of(item)))
            else:
                messages.append(AIMessage(_text_of(item), tool_calls=[]))
        elif kind == "function_call":
            calling().tool_calls.append(
                {
                    "id": item["call_id"],
                    "name": item["name"],
                    "args": json.loads(item["arguments"] or "{}"),
                    "type": "tool_call",
                }
            )
        elif kind == "function_call_output":
            messages.append(ToolMessage(item["output"], tool_call_id=item["call_id"]))
        elif kind in ("mcp_call", "file_search_call"):  # ran on the server: call + result
            name = item.get("name") or "knowledge_search"
            if kind == "mcp_call":
                args = json.loads(item.get("arguments") or "{}")
                result = item.get("output") or ""
            else:
                args = {"query": " ".join(item.get("queries") or [])}
                result = json.dumps(item.get("results") or [])
            calling().tool_calls.append(
                {"id": item["id"], "name": name, "args": args, "type": "tool_call"}
            )
            messages.append(ToolMessage(result, tool_call_id=item["id"]))
    return "\n\n".join(part for part in system if part.strip()), messages

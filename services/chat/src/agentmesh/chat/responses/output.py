"""A run's events as a response's output items, and as the Responses API's stream events.

One builder serves both: fed the run's events live, it yields the stream's events; fed
them afterwards, it gives the same items the stored response keeps. Text between server
tool calls is a ``message`` item of its own; the agent's tools appear as ``mcp_call`` (MCP
and built-in tools) or ``file_search_call`` (knowledge search) items, never as
``function_call``; the client's function tools come last, as ``function_call`` items.
The answer's citations (``message.completed``) are ``file_citation`` annotations on the
text of its last message, one per document, at the end of that text.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from agentmesh.chat.runs.executor import RunOutcome
from agentmesh.chat.runs.hub import RunEvent

Event = tuple[str, dict[str, Any]]
KNOWLEDGE = "knowledge_search"


def response_id(run_id: uuid.UUID) -> str:
    return f"resp_{run_id.hex}"


def run_id_of(response_id: str) -> uuid.UUID | None:
    if not response_id.startswith("resp_"):
        return None
    try:
        return uuid.UUID(hex=response_id[5:])
    except ValueError:
        return None


def server_labels(config: dict[str, Any]) -> dict[str, str]:
    """Which MCP server each of the agent's MCP tools comes from (by tool name)."""
    labels: dict[str, str] = {}
    for ref in config.get("tools") or []:
        if ref.get("id") == "mcp":
            server = str((ref.get("config") or {}).get("server_id") or "mcp")
            for name in (ref.get("config") or {}).get("tools") or []:
                labels[str(name)] = f"mcp-{server}"
    return labels


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


class OutputBuilder:
    def __init__(
        self, run_id: uuid.UUID, labels: dict[str, str], *, include_results: bool = False
    ) -> None:
        self.hex = run_id.hex
        self.labels = labels
        self.include_results = include_results
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the message item text is going to
        self.tools: dict[str, int] = {}  # server tool call id -> output index
        self.streamed = ""
        #: The answer's annotations, for the message closed next (the last: they come
        #: with ``message.completed``, after all of the answer's text).
        self.annotations: list[dict[str, Any]] = []

    def _add(self, item: dict[str, Any]) -> Event:
        self.items.append(item)
        return "response.output_item.added", {
            "output_index": len(self.items) - 1,
            "item": _copy(item),
        }

    def _open_message(self) -> list[Event]:
        index = len(self.items)
        self.open = {
            "id": f"msg_{self.hex}{index:04x}",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        added = self._add(self.open)
        self.open["content"].append(_text_part(""))
        return [
            added,
            (
                "response.content_part.added",
                {
                    "item_id": self.open["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": _text_part(""),
                },
            ),
        ]

    def _text(self, delta: str) -> list[Event]:
        events = self._open_message() if self.open is None else []
        assert self.open is not None
        self.open["content"][0]["text"] += delta
        self.streamed += delta
        events.append(
            (
                "response.output_text.delta",
                {
                    "item_id": self.open["id"],
                    "output_index": self.items.index(self.open),
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                },
            )
        )
        return events

    def close_message(self, status: str = "completed") -> list[Event]:
        if self.open is None:
            return []
        item, self.open = self.open, None
        index, part = self.items.index(item), item["content"][0]
        item["status"] = status
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        annotated = []
        for annotation in self.annotations:
            annotation = {**annotation, "index": len(part["text"])}
            annotated.append(
                (
                    "response.output_text.annotation.added",
                    {
                        **where,
                        "annotation_index": len(part["annotations"]),
                        "annotation": annotation,
                    },
                )
            )
            part["annotations"].append(annotation)
        self.annotations = []
        return [
            *annotated,
            ("response.output_text.done", {**where, "text": part["text"], "logprobs": []}),
            ("response.content_part.done", {**where, "part": dict(part)}),
            ("response.output_item.done", {"output_index": index, "item": _copy(item)}),
        ]

    def feed(self, event: RunEvent) -> list[Event]:
        """The stream events one run event makes."""
        data = event.data
        if event.type == "message.delta" and data.get("delta"):
            return self._text(str(data["delta"]))
        if event.type == "tool.call":
            return [*self.close_message(), *self._tool_call(data)]
        if event.type == "tool.result":
            return self._tool_result(data)
        if event.type == "message.completed":
            self.annotations = file_citations(data.get("citations") or [])
        if event.type == "tool.approval_required":  # the run ends asking (responses.approvals)
            item = {
                "id": f"mcpr_{data['call_id']}",
                "type": "mcp_approval_request",
                "name": data["name"],
                "arguments": json.dumps(data.get("args") or {}),
                "server_label": self.labels.get(data["name"], "agentmesh"),
            }
            done = (
                "response.output_item.done",
                {"output_index": len(self.items), "item": _copy(item)},
            )
            return [*self.close_message(), self._add(item), done]
        return []

    def _tool_call(self, call: dict[str, Any]) -> list[Event]:
        index = len(self.items)
        self.tools[str(call["id"])] = index
        args = call.get("args") or {}
        if call["name"] == KNOWLEDGE:
            item = {
                "id": f"fs_{self.hex}{index:04x}",
                "type": "file_search_call",
                "status": "in_progress",
                "queries": [str(args.get("query") or "")],
                "results": None,
            }
            where = {"output_index": index, "item_id": item["id"]}
            return [
                self._add(item),
                ("response.file_search_call.in_progress", where),
                ("response.file_search_call.searching", where),
            ]
        arguments = json.dumps(args)
        item = {
            "id": f"mcp_{self.hex}{index:04x}",
            "type": "mcp_call",
            "status": "in_progress",
            "server_label": self.labels.get(call["name"], "agentmesh"),
            "name": call["name"],
            "arguments": "",
            "output": None,
            "error": None,
        }
        if call.get("approval"):  # decided by a person: which request it answered
            item["approval_request_id"] = call["approval"].get("approval_request_id") or (
                f"mcpr_{call['id']}"
            )
        where = {"output_index": index, "item_id": item["id"]}
        events = [
            self._add(item),
            ("response.mcp_call.in_progress", where),
            ("response.mcp_call_arguments.delta", {**where, "delta": arguments}),
            ("response.mcp_call_arguments.done", {**where, "arguments": arguments}),
        ]
        item["arguments"] = arguments
        return events

    def _tool_result(self, result: dict[str, Any]) -> list[Event]:
        index = self.tools.get(str(result.get("id")))
        if index is None:
            return []
        item = self.items[index]
        where = {"output_index": index, "item_id": item["id"]}
        text = str(result.get("result") or "")
        item["status"] = "completed"
        if item["type"] == "file_search_call":
            if self.include_results:
                item["results"] = _search_results(text)
            done = ("response.file_search_call.completed", where)
        else:
            item["output"] = text
            done = ("response.mcp_call.completed", where)
        return [done, ("response.output_item.done", {"output_index": index, "item": _copy(item)})]

    def finish(self, outcome: RunOutcome, *, incomplete: bool) -> list[Event]:
        """The events of the end of the run: the answer's last text, the client's calls."""
        events: list[Event] = []
        rest = (
            outcome.content[len(self.streamed) :]
            if outcome.content.startswith(self.streamed)
            else ""
        )
        if rest:
            events += self._text(rest)
        if self.open is None and not self.items and not outcome.pending_tool_calls:
            events += self._open_message()  # an empty answer is still a message
        events += self.close_message("incomplete" if incomplete else "completed")
        for call in outcome.pending_tool_calls:
            index = len(self.items)
            arguments = json.dumps(call.get("args") or {})
            call_id = str(call.get("id") or f"call_{self.hex[:8]}{index}")
            item = {
                "id": f"fc_{self.hex}{index:04x}",
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id,
                "name": call["name"],
                "arguments": "",
            }
            where = {"output_index": index, "item_id": item["id"]}
            events.append(self._add(item))
            events.append(("response.function_call_arguments.delta", {**where, "delta": arguments}))
            events.append(
                (
                    "response.function_call_arguments.done",
                    {**where, "name": call["name"], "arguments": arguments},
                )
            )
            item["arguments"], item["status"] = arguments, "completed"
            events.append(
                ("response.output_item.done", {"output_index": index, "item": _copy(item)})
            )
        return events

    def finish_items(self, final: list[dict[str, Any]]) -> list[Event]:
        """The events that take what was streamed to ``final`` (the stored output): the
        open message's last text, then the items the run's events did not show."""
        events: list[Event] = []
        for index, item in enumerate(final):
            if index < len(self.items):
                if self.items[index] is self.open:
                    shown = self.open["content"][0]["text"]
                    rest = _text_of(item)[len(shown) :]
                    events += self._text(rest) if rest else []
                    events += self.close_message(item.get("status") or "completed")
                continue
            events += self.close_message()
            if item["type"] == "message":
                events += self._open_message()
                assert self.open is not None
                self.open["id"] = item["id"]
                events[-2][1]["item"]["id"] = events[-1][1]["item_id"] = item["id"]
                text = _text_of(item)
                events += self._text(text) if text else []
                self.annotations = _annotations_of(item)
                events += self.close_message(item.get("status") or "completed")
            elif item["type"] == "function_call":
                where = {"output_index": index, "item_id": item["id"]}
                events.append(self._add({**item, "status": "in_progress", "arguments": ""}))
                self.items[index] = dict(item)
                events.append(
                    (
                        "response.function_call_arguments.delta",
                        {**where, "delta": item["arguments"]},
                    )
                )
                events.append(
                    (
                        "response.function_call_arguments.done",
                        {**where, "name": item["name"], "arguments": item["arguments"]},
                    )
                )
                events.append(("response.output_item.done", {"output_index": index, "item": item}))
            else:  # a server tool's item whose events are gone: shown whole
                events.append(self._add(item))
                events.append(("response.output_item.done", {"output_index": index, "item": item}))
        return events + self.close_message()


def file_citations(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``file_citation`` annotations of the cited documents, each once (``index`` is set
    where the text they annotate ends)."""
    documents = dict.fromkeys(
        (str(c.get("document_id")), str(c.get("filename") or "")) for c in citations
    )
    return [
        {"type": "file_citation", "file_id": file_id, "filename": filename, "index": 0}
        for file_id, filename in documents
    ]


def _annotations_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for part in item.get("content") or [] for a in part.get("annotations") or []]


def _text_of(item: dict[str, Any]) -> str:
    return "".join(part.get("text") or "" for part in item.get("content") or [])


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(item))


_HIT = re.compile(
    r"\[(\d+)\] (.*?) \(document_id: (.*?), score: (.*?)\)\n(.*?)(?=\n\n\[\d+\] |\Z)", re.DOTALL
)


def _search_results(text: str) -> list[dict[str, Any]]:
    """knowledge_search's numbered passages as file_search_call results."""
    results: list[dict[str, Any]] = []
    for match in _HIT.finditer(text):
        _, filename, document_id, score, content = match.groups()
        try:
            value: float | None = float(score)
        except ValueError:
            value = None
        results.append(
            {
                "file_id": document_id,
                "filename": filename,
                "score": value,
                "text": content.strip(),
                "attributes": {},
            }
        )
    return results


def outcome_items(
    run_id: uuid.UUID,
    labels: dict[str, str],
    events: list[RunEvent],
    outcome: RunOutcome,
    *,
    incomplete: bool,
    include_results: bool = False,
) -> list[dict[str, Any]]:
    """The output items of a finished run, from its events (as its stream showed them)."""
    builder = OutputBuilder(run_id, labels, include_results=include_results)
    for event in events:
        builder.feed(event)
    builder.finish(outcome, incomplete=incomplete)
    return builder.items

"""The agent's own tools appear as hosted calls (mcp_call, file_search_call), never as
function_call; text.format json_schema gives JSON that validates against the schema."""

from __future__ import annotations

import json
import uuid

import jsonschema

from agentmesh.chat.responses.output import OutputBuilder
from agentmesh.chat.runs.executor import RunOutcome
from agentmesh.chat.runs.hub import RunEvent

RESPONSES = "/v1/responses"
SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "temperature": {"type": "number", "minimum": -50},
        "sunny": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "unit": {"type": "string", "enum": ["C", "F"]},
    },
    "required": ["city", "temperature", "sunny", "tags", "unit"],
    "additionalProperties": False,
}


def sse_data(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


async def test_builtin_tool_is_an_mcp_call(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Calc", tools=[{"id": "calculator"}])
    body = {"model": "calc", "input": "Use the calculator for 6*7"}
    response = await chat.post(RESPONSES, headers=headers, json=body)
    assert response.status_code == 200, response.text
    output = response.json()["output"]
    assert [item["type"] for item in output] == ["mcp_call", "message"]
    call = output[0]
    assert call["server_label"] == "agentmesh" and call["name"] == "calculator"
    assert json.loads(call["arguments"]) and "42" in call["output"]
    assert call["status"] == "completed" and call["id"].startswith("mcp_")

    streamed = await chat.post(RESPONSES, headers=headers, json={**body, "stream": True})
    events = sse_data(streamed.text)
    types = [e["type"] for e in events]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert "function_call" not in streamed.text
    order = [
        "response.output_item.added",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.output_item.done",
    ]
    assert [t for t in types if t in order][: len(order)] == order
    assert events[-1]["response"]["output"][0]["output"] == call["output"]
    # The whole history back as input (as the Agents SDK sends it) replays the call.
    again = await chat.post(
        RESPONSES,
        headers=headers,
        json={
            "model": "calc",
            "input": [
                {"role": "user", "content": "6*7?"},
                *output,
                {"role": "user", "content": "thanks"},
            ],
        },
    )
    assert again.status_code == 200, again.text


async def test_json_schema_format_validates(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    await make_agent(headers, name="Keeper")
    text = {"format": {"type": "json_schema", "name": "weather", "schema": SCHEMA, "strict": True}}
    response = await chat.post(
        RESPONSES,
        headers=headers,
        json={"model": "keeper", "input": "Weather in Lisbon?", "text": text},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    answer = json.loads(body["output"][0]["content"][0]["text"])
    jsonschema.validate(answer, SCHEMA)
    assert body["text"]["format"]["name"] == "weather"
    plain = await chat.post(
        RESPONSES,
        headers=headers,
        json={"model": "keeper", "input": "hi", "text": {"format": {"type": "json_object"}}},
    )
    assert isinstance(json.loads(plain.json()["output"][0]["content"][0]["text"]), dict)
    nameless = await chat.post(
        RESPONSES,
        headers=headers,
        json={"model": "keeper", "input": "hi", "text": {"format": {"type": "json_schema"}}},
    )
    assert nameless.status_code == 400 and nameless.json()["error"]["param"] == "text.format.name"


def test_knowledge_search_is_a_file_search_call_with_results():
    """Knowledge search (whose end-to-end path needs ingestion: tests/e2e) as the builder
    shows it, fed the run events it makes."""
    run_id = uuid.uuid4()
    result = (
        "Cite passages by number and filename.\n\n"
        "[1] guide.md (document_id: d1, score: 0.912)\nKeep keys safe.\n\n"
        "[2] faq.md (document_id: d2, score: 0.5)\nRotate them."
    )
    events = [
        RunEvent(
            1, "tool.call", {"id": "c1", "name": "knowledge_search", "args": {"query": "keys"}}
        ),
        RunEvent(2, "tool.result", {"id": "c1", "name": "knowledge_search", "result": result}),
        RunEvent(3, "message.delta", {"delta": "Keep them safe."}),
    ]
    for include in (True, False):
        builder = OutputBuilder(run_id, {}, include_results=include)
        shown = [t for event in events for t, _ in builder.feed(event)]
        builder.finish(RunOutcome(content="Keep them safe."), incomplete=False)
        search, message = builder.items
        assert search["type"] == "file_search_call" and search["queries"] == ["keys"]
        assert search["status"] == "completed" and message["type"] == "message"
        assert shown[:3] == [
            "response.output_item.added",
            "response.file_search_call.in_progress",
            "response.file_search_call.searching",
        ]
        assert "response.file_search_call.completed" in shown
        if include:
            assert [
                (r["file_id"], r["filename"], r["score"], r["text"]) for r in search["results"]
            ] == [
                ("d1", "guide.md", 0.912, "Keep keys safe."),
                ("d2", "faq.md", 0.5, "Rotate them."),
            ]
        else:
            assert search["results"] is None

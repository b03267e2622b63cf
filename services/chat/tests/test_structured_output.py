"""``response_format`` on /v1/chat/completions with the offline model: a minimal JSON
document that validates against the schema, streamed or not, and 400s for bad formats."""

from __future__ import annotations

import json

import jsonschema

from .test_openai_compat import COMPLETIONS, assert_openai_error, data_lines

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 3},
        "days": {"type": "integer", "minimum": 1},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "rain": {"type": "boolean"},
    },
    "required": ["city", "days", "unit", "tags", "rain"],
    "additionalProperties": False,
}
HELLO = [{"role": "user", "content": "Weather in Lyon?"}]


def _format(schema: dict = SCHEMA) -> dict:
    return {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": schema, "strict": True},
    }


async def test_the_offline_model_answers_a_document_of_the_schema(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    body = {"model": agent["id"], "messages": HELLO, "response_format": _format()}
    response = await chat.post(COMPLETIONS, headers=headers, json=body)
    assert response.status_code == 200, response.text
    document = json.loads(response.json()["choices"][0]["message"]["content"])
    jsonschema.validate(document, SCHEMA)
    streamed = await chat.post(COMPLETIONS, headers=headers, json={**body, "stream": True})
    chunks = [json.loads(line) for line in data_lines(streamed.text) if line != "[DONE]"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert json.loads(text) == document


async def test_json_object_and_text(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    body = {"model": agent["id"], "messages": HELLO, "response_format": {"type": "json_object"}}
    response = await chat.post(COMPLETIONS, headers=headers, json=body)
    document = json.loads(response.json()["choices"][0]["message"]["content"])
    assert isinstance(document, dict) and "Weather in Lyon?" in document["answer"]
    text = await chat.post(
        COMPLETIONS, headers=headers, json={**body, "response_format": {"type": "text"}}
    )
    assert text.json()["choices"][0]["message"]["content"].startswith("You said")


async def test_a_bad_response_format_is_a_400_naming_it(chat, make_agent, token_issuer):
    headers = token_issuer.headers()
    agent = await make_agent(headers)
    for bad in (
        {"type": "xml"},
        {"type": "json_schema"},  # no json_schema
        {"type": "json_schema", "json_schema": {"name": "weather"}},  # no schema
        {"type": "json_schema", "json_schema": {"name": "no spaces", "schema": SCHEMA}},
        "json",
    ):
        body = {"model": agent["id"], "messages": HELLO, "response_format": bad}
        error = assert_openai_error(await chat.post(COMPLETIONS, headers=headers, json=body), 400)
        assert error["param"].startswith("response_format"), error

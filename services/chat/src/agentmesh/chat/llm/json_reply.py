"""The offline model's answer as JSON that fits a ``response_format``: ``json_object``
gives ``{"answer": text}``, ``json_schema`` an instance of the schema built from it (the
answer's text in its strings, the first value of enums, the smallest allowed numbers)."""

from __future__ import annotations

from typing import Any


def _instance(schema: Any, text: str, defs: dict[str, Any], depth: int = 0) -> Any:
    if not isinstance(schema, dict) or depth > 20:
        return text
    if "$ref" in schema:
        return _instance(defs.get(schema["$ref"].rsplit("/", 1)[-1]), text, defs, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _instance(schema[key][0], text, defs, depth + 1)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: _instance(sub, text, defs, depth + 1) for name, sub in properties.items()}
    if kind == "array":
        count = int(schema.get("minItems") or 0)
        return [_instance(schema.get("items"), text, defs, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low: Any = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + 1 if "exclusiveMinimum" in schema else low
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    value = text[: schema["maxLength"]] if "maxLength" in schema else text
    return value.ljust(int(schema.get("minLength") or 0), ".")


def json_reply(response_format: dict[str, Any], text: str) -> Any:
    """What the offline model answers under ``response_format`` (Chat Completions form)."""
    if response_format.get("type") != "json_schema":
        return {"answer": text}
    schema = (response_format.get("json_schema") or {}).get("schema") or {}
    return _instance(schema, text, schema.get("$defs") or schema.get("definitions") or {})

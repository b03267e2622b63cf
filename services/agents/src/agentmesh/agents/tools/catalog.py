"""The built-in tools agents can use, with JSON schemas for their arguments."""

from __future__ import annotations

from typing import Any

BUILTIN_TOOLS: dict[str, dict[str, Any]] = {
    "calculator": {
        "description": "Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "maxLength": 500}},
            "required": ["expression"],
        },
        "config": {"type": "object", "properties": {}},
    },
    "current_time": {
        "description": "The current date and time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "default": "UTC", "examples": ["Europe/Paris"]}
            },
        },
        "config": {"type": "object", "properties": {}},
    },
    "knowledge_search": {
        "description": "Search the agent's knowledge bases.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 2000},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5},
            },
            "required": ["query"],
        },
        "config": {"type": "object", "properties": {}},
    },
    "http_request": {
        "description": "GET or POST to an allow-listed host; never private or loopback addresses.",
        "parameters": {
            "type": "object",
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "method": {"type": "string", "enum": ["GET", "POST"], "default": "GET"},
                "body": {"type": "string", "maxLength": 100_000},
            },
            "required": ["url"],
        },
        "config": {
            "type": "object",
            "properties": {
                "allowed_hosts": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
                "timeout_seconds": {"type": "number", "minimum": 0.1, "maximum": 60},
                "max_response_bytes": {"type": "integer", "minimum": 1, "maximum": 5_000_000},
            },
            "required": ["allowed_hosts"],
        },
    },
}

"""The built-in tools agents can use, with JSON schemas for their arguments and config.

Each ``config`` schema is generated from the tool's config model in
``agentmesh.shared.tools.configs``: what the catalog shows is what an agent is checked
against and what the tool clamps to at run time.
"""

from __future__ import annotations

from typing import Any

from agentmesh.shared.tools.configs import config_schema

BUILTIN_TOOLS: dict[str, dict[str, Any]] = {
    "calculator": {
        "description": "Evaluate an arithmetic expression (+ - * / // % ** and parentheses).",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "maxLength": 500}},
            "required": ["expression"],
        },
        "config": config_schema("calculator"),
    },
    "current_time": {
        "description": "The current date and time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "default": "UTC", "examples": ["Europe/Paris"]}
            },
        },
        "config": config_schema("current_time"),
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
        "config": config_schema("knowledge_search"),
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
        "config": config_schema("http_request"),
    },
}

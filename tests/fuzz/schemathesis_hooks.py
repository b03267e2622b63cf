"""Schemathesis hooks for the fuzz run (``SCHEMATHESIS_HOOKS=<this file>``).

``not_a_server_bug`` is ``not_a_server_error`` with one exception: a 5xx that reports the
failure of a model provider or MCP server *the user configured*. The fuzzer registers
providers and MCP servers at made-up URLs, then runs agents on them; the platform then
answers, by design, 502/503/504 with a problem type naming what failed (as an OpenAI error
code on /v1). Any other 5xx is a bug.
"""

from __future__ import annotations

import json

import schemathesis
from schemathesis.checks import not_a_server_error

#: Problem types (``llm/streaming.py``, ``mcp/service.py``) of a user's upstream failing.
#: Not ``model-call-failed``: that one also covers exceptions nobody classified.
UPSTREAM_FAILURES = frozenset(
    {
        "model-unreachable",
        "model-timeout",
        "model-unavailable",
        "model-rate-limited",
        "model-auth-failed",
        "model-not-found",
        "model-rejected-request",
        "model-bad-response",
        "model-context-overflow",
        "model-stream-interrupted",
        "mcp-server-unreachable",
    }
)


def problem_type(body: bytes) -> str | None:
    """The problem type's slug of a problem+json body, or the code of an OpenAI error."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("error"), dict):
        return str(data["error"].get("code") or "").replace("_", "-") or None
    return str(data.get("type", "")).rsplit("/", 1)[-1] or None


@schemathesis.check
def not_a_server_bug(ctx, response, case):
    """No 5xx, except a user's own model provider or MCP server failing (see above)."""
    if response.status_code >= 500 and problem_type(response.content) in UPSTREAM_FAILURES:
        return None
    return not_a_server_error(ctx, response, case)

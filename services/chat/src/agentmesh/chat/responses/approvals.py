"""Tool approval in the Responses API, as OpenAI's remote MCP tools do it.

A call the agent's policy asks about ends the response with an ``mcp_approval_request``
output item (``mcpr_<call id>``). The client answers in its next request (with
``previous_response_id``, or the items given back) with an ``mcp_approval_response``
input item; that response's run starts with the decided call (run, or denied with the
reason told to the model), shown as an ``mcp_call`` item with ``approval_request_id``,
and the model goes on.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agentmesh.chat.openai_compat.service import InvalidRequest
from agentmesh.chat.runs.approvals import Resume
from agentmesh.shared.access import Access

REQUEST, ANSWER = "mcp_approval_request", "mcp_approval_response"


def request_id(call_id: str) -> str:
    return f"mcpr_{call_id}"


def answered_call(
    history: list[dict[str, Any]], new: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The call an ``mcp_approval_response`` of the input decides, and that answer."""
    answers = [(index, item) for index, item in enumerate(new) if item["type"] == ANSWER]
    if not answers:
        return None
    if len(answers) > 1:
        raise InvalidRequest(
            "Answer one mcp_approval_request per request.",
            extra={"param": f"input[{answers[1][0]}]"},
        )
    index, answer = answers[0]
    wanted = answer["approval_request_id"]
    request = next(
        (item for item in history + new if item["type"] == REQUEST and item["id"] == wanted), None
    )
    done = any(
        item.get("type") == "mcp_call" and item.get("approval_request_id") == wanted
        for item in history
    )
    if request is None or done:
        why = "was answered already" if done else "is not in this conversation"
        raise InvalidRequest(
            f"The approval request {wanted!r} {why}.",
            extra={"param": f"input[{index}].approval_request_id"},
        )
    try:
        args = json.loads(request.get("arguments") or "{}")
    except ValueError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest(
            "The approval request's arguments are not a JSON object.", extra={"param": "input"}
        )
    call_id = wanted[5:] if wanted.startswith("mcpr_") else wanted
    return {"id": call_id, "name": str(request.get("name")), "args": args}, answer


def resume(call: dict[str, Any], answer: dict[str, Any], access: Access) -> Resume:
    """A new run that starts with the decided call, then asks the model."""
    zero = {"content": "", "tool_calls": [], "input_tokens": 0, "output_tokens": 0}
    decision = {
        "decided_by": str(access.user_id),
        "approve": bool(answer["approve"]),
        "reason": answer.get("reason"),
        "at": datetime.now(UTC).isoformat(),
        "approval_request_id": answer["approval_request_id"],
    }
    state = {"messages": None, "calls": [call], "step": 0, "outcome": zero}
    return Resume(state=state, decision=decision, last_event_id=0, continued=False)

"""The agent's instructions of one run, their template filled in (``shared.templates``).

The conversation's title, ``variables`` and ``timezone`` come with the run's plan. A user's
name and email and the workspace's name live in identity: they are asked for
(``identity.rpc.profile``) only when the instructions name them, and kept in memory for
``PROFILE_TTL_SECONDS``, bounded, never in chat's database. When identity can't answer,
they render empty (logged): a run is not failed for a greeting.
"""

from __future__ import annotations

import json
import logging
import uuid
import zoneinfo
from typing import TYPE_CHECKING, Any

from cachetools import TTLCache

from agentmesh.chat.agents_client import nats_client
from agentmesh.shared.templates import TemplateError, check, context

if TYPE_CHECKING:
    from agentmesh.chat.runs.executor import RunPlan
    from agentmesh.chat.state import ChatState

logger = logging.getLogger("agentmesh.chat.templating")

#: Key of a run's config for instructions a caller sent (system and developer messages on
#: /v1/chat/completions, ``instructions`` on /v1/responses): they follow the agent's,
#: as written, never a template.
CALLER_INSTRUCTIONS = "caller_instructions"
PROFILE_SUBJECT = "identity.rpc.profile"
PROFILE_TTL_SECONDS = 60.0
PROFILE_CACHE_SIZE = 4096


class Profiles:
    """Chat's client of ``identity.rpc.profile``, with its short cache."""

    def __init__(self, broker: Any, internal_token: str, *, timeout: float) -> None:
        self.broker = broker
        self.token = internal_token
        self.timeout = timeout
        Key = tuple[uuid.UUID, uuid.UUID]  # user, workspace
        self._cache: TTLCache[Key, dict[str, Any]] = TTLCache(
            maxsize=PROFILE_CACHE_SIZE, ttl=PROFILE_TTL_SECONDS
        )

    async def get(self, user_id: uuid.UUID, workspace_id: uuid.UUID) -> dict[str, Any]:
        """``{"user": {name, email} | None, "workspace": {name} | None}``; empty on failure."""
        key = (user_id, workspace_id)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        nc = nats_client(self.broker)
        try:
            if nc is None or not nc.is_connected:
                raise ConnectionError("no NATS connection")
            reply = await nc.request(
                PROFILE_SUBJECT,
                json.dumps({"user_id": str(user_id), "workspace_id": str(workspace_id)}).encode(),
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {self.token}"},
            )
            answer = json.loads(reply.data)
            if "error" in answer:
                raise RuntimeError(answer["error"])
        except Exception as exc:  # timeout, no responders, refused
            logger.warning(
                "profile not available; its variables render empty",
                extra={"reason": f"{type(exc).__name__}: {exc}"},
            )
            return {}
        self._cache[key] = answer
        return answer


def _zone(name: str | None) -> zoneinfo.ZoneInfo | None:
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # checked when stored
        return None


async def instructions_for(state: ChatState, plan: RunPlan) -> str:
    """``plan``'s instructions with their variables filled in, then the caller's own."""
    rendered = await _render(state, plan)
    caller = plan.config.get(CALLER_INSTRUCTIONS) or ""
    return "\n\n".join(part for part in (rendered, caller) if part.strip())


async def _render(state: ChatState, plan: RunPlan) -> str:
    source = plan.config.get("instructions") or ""
    try:
        template = check(source)
    except TemplateError:  # saved before templates were checked: as written
        return str(source)
    if not template.tags:
        return str(source)
    found: dict[str, Any] = {}
    if template.prefixes & {"user", "workspace"}:
        found = await state.profiles.get(plan.user_id, plan.workspace_id)
    conversation = plan.prompt_vars or {}
    values = context(
        user=found.get("user"),
        workspace=found.get("workspace"),
        conversation={"title": conversation.get("title")},
        variables=conversation.get("variables"),
        timezone=_zone(conversation.get("timezone")),
    )
    return template.render(values)


def examples_of(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The agent's few-shot turns as (user, assistant) pairs."""
    return [
        (str(shot.get("user", "")), str(shot.get("assistant", "")))
        for shot in config.get("examples") or []
        if isinstance(shot, dict)
    ]

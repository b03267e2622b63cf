"""What the gateway consumes: identity's revocations, on plain NATS subjects so that every
replica hears them (each evicts its own cache). It publishes nothing."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from agentmesh.gateway.principals import Authenticator
from agentmesh.shared.runtime import ServiceRuntime

logger = logging.getLogger("agentmesh.gateway.events")

EVICTING_SUBJECTS = (
    "identity.apikey.revoked",
    "identity.user.deactivated",
    "identity.user.deleted",
    "identity.user.updated",
)


def register(runtime: ServiceRuntime, authenticator: Authenticator) -> None:
    assert runtime.broker is not None

    async def evict(body: dict[str, Any]) -> None:
        subject, data = body.get("type"), body.get("data") or {}
        try:
            if subject == "identity.apikey.revoked":
                authenticator.evict_api_key(str(data["api_key_id"]))
            elif subject in ("identity.user.deactivated", "identity.user.deleted") or (
                subject == "identity.user.updated" and data.get("is_active") is False
            ):
                authenticator.evict_user(uuid.UUID(str(data["user_id"])))
            elif subject == "identity.user.updated":
                # Roles may have changed: drop cached tokens; new ones carry the new roles.
                authenticator.allow_user(uuid.UUID(str(data["user_id"])))
        except (KeyError, ValueError):
            logger.warning("malformed eviction event", extra={"subject": subject})

    for subject in EVICTING_SUBJECTS:
        # No stream, no queue group: a core subscription every replica receives.
        runtime.broker.subscriber(
            subject, title=f"gateway-evict-{subject}", description="Evict cached credentials"
        )(evict)

"""``identity.rpc.profile``: a user's name and email and a workspace's name, for chat.

Chat fills an agent's instructions template (``{{user.name}}``, ``{{user.email}}``,
``{{workspace.name}}``) with them. Nothing of this is copied into chat's database: chat
asks when a run's instructions name them and keeps the answer in memory for a minute, so
a renamed user or an erased one is current everywhere soon. Services only (the internal
token), over core NATS request/reply; ``identity.rpc.*`` is not captured by a stream.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel, ValidationError

from agentmesh.identity.crypto import same_secret
from agentmesh.identity.users.models import User
from agentmesh.identity.workspaces.models import Workspace

SUBJECT = "identity.rpc.profile"
logger = logging.getLogger("agentmesh.identity.rpc")


class ProfileCall(BaseModel):
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None = None


def register(broker: NatsBroker, sessionmaker: Any, internal_token: str) -> None:
    @broker.subscriber(
        SUBJECT,
        queue="identity-rpc",
        title=SUBJECT,
        description="A user's name and email and a workspace's name (services only)",
    )
    async def profile(body: dict[str, Any], msg: NatsMessage) -> dict[str, Any]:
        token = (msg.raw_message.headers or {}).get("Authorization", "").removeprefix("Bearer ")
        if not internal_token or not same_secret(token, internal_token):
            logger.warning("profile request without the service credential")
            return {"error": "unauthorized"}
        try:
            call = ProfileCall.model_validate(body)
        except ValidationError as exc:
            return {"error": "bad_request", "detail": str(exc.errors()[0]["msg"])}
        async with sessionmaker() as session:
            user = await session.get(User, call.user_id)
            workspace = (
                await session.get(Workspace, call.workspace_id) if call.workspace_id else None
            )
        return {
            "user": {"name": user.name, "email": user.email} if user and user.is_active else None,
            "workspace": {"name": workspace.name}
            if workspace is not None and workspace.deleted_at is None
            else None,
        }

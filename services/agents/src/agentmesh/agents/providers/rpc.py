"""``agents.rpc.provider.credentials``: chat asks for a provider's key at run time.

Core NATS request/reply (never an event, never stored by JetStream), answered by one
replica of a queue group. Only services may ask: the request carries the platform's
internal token. In production also restrict ``agents.rpc.>`` to service accounts in NATS.

The body is ``{user_id, provider_id, workspace_id?}``: the provider is looked up only in
that workspace (the one chat's caller is bound to); without ``workspace_id`` (an older
chat) in the user's personal workspace.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from faststream.nats import NatsBroker, NatsMessage

from agentmesh.agents.providers import service
from agentmesh.agents.workspaces import asked_workspace
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.errors import NotFound

SUBJECT = "agents.rpc.provider.credentials"
logger = logging.getLogger("agentmesh.agents.rpc")


def register(broker: NatsBroker, sessionmaker: Any, box: SecretBox, internal_token: str) -> None:
    from agentmesh.agents.deps import same_secret

    @broker.subscriber(
        SUBJECT,
        queue="agents-rpc",
        title=SUBJECT,
        description="Reply with a provider's credentials (services only)",
    )
    async def provider_credentials(body: dict[str, Any], msg: NatsMessage) -> dict[str, Any]:
        token = (msg.raw_message.headers or {}).get("Authorization", "").removeprefix("Bearer ")
        if not internal_token or not same_secret(token, internal_token):
            logger.warning("credentials request without the service credential")
            return {"error": "unauthorized"}
        try:
            provider_id = uuid.UUID(str(body["provider_id"]))
            workspace_id = asked_workspace(body)
        except (KeyError, ValueError, TypeError):
            return {"error": "bad_request"}
        async with sessionmaker() as session:
            try:
                provider = await service.get_owned(session, workspace_id, provider_id)
            except NotFound:
                return {"error": "not_found"}
            return {"provider_id": str(provider.id), **service.credentials(box, provider)}

"""``agents.rpc.mcp.connection``: chat asks how to reach a user's MCP server at run time.

Replies ``{url, headers}`` with the auth header decrypted, for a server of the workspace
the body names (``{user_id, server_id, workspace_id?}``; without ``workspace_id``, the
user's personal workspace).
Core NATS request/reply answered by one replica of the ``agents-rpc`` queue group, and
services only (the internal token), like the credentials RPC.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from faststream.nats import NatsBroker, NatsMessage

from agentmesh.agents.mcp import service
from agentmesh.agents.workspaces import asked_workspace
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.errors import NotFound

SUBJECT = "agents.rpc.mcp.connection"
logger = logging.getLogger("agentmesh.agents.rpc")


def register(broker: NatsBroker, sessionmaker: Any, box: SecretBox, internal_token: str) -> None:
    from agentmesh.agents.deps import same_secret

    @broker.subscriber(
        SUBJECT,
        queue="agents-rpc",
        title=SUBJECT,
        description="Reply with how to reach a workspace's MCP server (services only)",
    )
    async def mcp_connection(body: dict[str, Any], msg: NatsMessage) -> dict[str, Any]:
        token = (msg.raw_message.headers or {}).get("Authorization", "").removeprefix("Bearer ")
        if not internal_token or not same_secret(token, internal_token):
            logger.warning("mcp connection request without the service credential")
            return {"error": "unauthorized"}
        try:
            server_id = uuid.UUID(str(body["server_id"]))
            workspace_id = asked_workspace(body)
        except (KeyError, ValueError, TypeError):
            return {"error": "bad_request"}
        async with sessionmaker() as session:
            try:
                server = await service.get_owned(session, workspace_id, server_id)
            except NotFound:
                return {"error": "not_found"}
            return {"url": server.url, "headers": service.auth_headers(box, server)}

"""What the identity service publishes (through its outbox) and consumes.

Publishes: identity.user.registered, identity.user.updated, identity.user.deactivated,
    identity.user.deleted, identity.apikey.created, identity.apikey.revoked.
Consumes: agents.erasure.completed and chat.erasure.completed, to finish the erasure saga;
    agents.workspace.purged and chat.workspace.purged, to finish deleting a workspace.
"""

from agentmesh.identity.erasure.service import on_erasure_completed
from agentmesh.identity.workspaces.lifecycle import on_workspace_purged
from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach identity's consumers (one durable consumer per publishing stream)."""
    runtime.subscribe(
        purpose="erasure-agents", subject="agents.erasure.completed", handler=on_erasure_completed
    )
    runtime.subscribe(
        purpose="erasure-chat", subject="chat.erasure.completed", handler=on_erasure_completed
    )
    runtime.subscribe(
        purpose="workspace-purge-agents",
        subject="agents.workspace.purged",
        handler=on_workspace_purged,
    )
    runtime.subscribe(
        purpose="workspace-purge-chat", subject="chat.workspace.purged", handler=on_workspace_purged
    )

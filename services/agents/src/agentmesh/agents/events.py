"""What the agents service publishes (through its outbox) and consumes.

Publishes: agents.agent.created, agents.agent.updated, agents.agent.deleted (each with the
    full config snapshot and version), agents.knowledge.document.indexed,
    agents.erasure.completed, agents.workspace.purged.
Consumes: identity.user.deleted (erasure), identity.workspace.deleted (the workspace
    deletion saga).
"""

from agentmesh.agents.erasure import on_user_deleted
from agentmesh.agents.purge import on_workspace_deleted
from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach the agents service's consumers."""
    assert runtime.outbox is not None
    runtime.subscribe(
        purpose="erasure", subject="identity.user.deleted", handler=on_user_deleted(runtime.outbox)
    )
    runtime.subscribe(
        purpose="workspace-purge",
        subject="identity.workspace.deleted",
        handler=on_workspace_deleted(runtime.outbox),
    )

"""What the chat service publishes (through its outbox) and consumes.

Publishes: chat.conversation.created, chat.conversation.deleted, chat.message.completed,
    chat.erasure.completed, chat.workspace.purged; and, on core NATS captured by the
    short-lived ``CHAT_RUNS`` stream, every run's events on ``chat.run.<run_id>`` (replay on
    any replica).
Consumes: agents.agent.> (the agent read-model), identity.user.deleted (erasure),
    identity.workspace.deleted (the workspace deletion saga).
"""

from agentmesh.chat.snapshots.consumer import on_agent_event
from agentmesh.chat.snapshots.erasure import on_user_deleted
from agentmesh.chat.snapshots.workspace_purge import on_workspace_deleted
from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach the chat service's consumers."""
    assert runtime.outbox is not None
    runtime.subscribe(purpose="agents", subject="agents.agent.>", handler=on_agent_event)
    runtime.subscribe(
        purpose="erasure", subject="identity.user.deleted", handler=on_user_deleted(runtime.outbox)
    )
    runtime.subscribe(
        purpose="workspaces",
        subject="identity.workspace.deleted",
        handler=on_workspace_deleted(runtime.outbox),
    )

"""What the chat service publishes (through its outbox) and consumes.

Publishes: chat.conversation.created, chat.conversation.deleted, chat.message.completed,
    chat.erasure.completed; and, on core NATS captured by the short-lived ``CHAT_RUNS``
    stream, every run's events on ``chat.run.<run_id>`` (replay on any replica).
Consumes: agents.agent.> (the agent read-model), identity.user.deleted (erasure).
"""

from agentmesh.chat.snapshots.consumer import on_agent_event
from agentmesh.chat.snapshots.erasure import on_user_deleted
from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach the chat service's consumers."""
    assert runtime.outbox is not None
    runtime.subscribe(purpose="agents", subject="agents.agent.>", handler=on_agent_event)
    runtime.subscribe(
        purpose="erasure", subject="identity.user.deleted", handler=on_user_deleted(runtime.outbox)
    )

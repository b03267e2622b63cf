"""What the chat service publishes (through its outbox) and consumes.

Publishes: chat.conversation.created, chat.conversation.deleted, chat.message.completed,
    chat.erasure.completed.
Consumes: nothing yet; its domain issue adds the consumers.
"""

from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach this service's consumers to the runtime (none until its domain lands)."""

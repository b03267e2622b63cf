"""What the agents service publishes (through its outbox) and consumes.

Publishes: agents.agent.created, agents.agent.updated, agents.agent.deleted,
    agents.knowledge.document.indexed, agents.erasure.completed.
Consumes: nothing yet; its domain issue adds the consumers.
"""

from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach this service's consumers to the runtime (none until its domain lands)."""

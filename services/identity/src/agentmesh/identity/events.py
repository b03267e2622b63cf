"""What the identity service publishes (through its outbox) and consumes.

Publishes: identity.user.registered, identity.user.updated, identity.user.deactivated,
    identity.user.deleted, identity.apikey.created, identity.apikey.revoked.
Consumes: nothing yet; its domain issue adds the consumers.
"""

from agentmesh.shared.runtime import ServiceRuntime


def register(runtime: ServiceRuntime) -> None:
    """Attach this service's consumers to the runtime (none until its domain lands)."""

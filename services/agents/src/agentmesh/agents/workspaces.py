"""Who may do what with the agents service's resources, workspace by workspace.

Every resource row has a ``workspace_id``; a caller sees the rows of the workspace their
token is bound to (``Access.workspace_id``) and nothing else: another workspace's row is
a 404. A platform admin may read and change any row by id. The role and API-key scope of
each route are the ``Annotated`` types below (``shared.access``: 403 ``forbidden``).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from agentmesh.shared.access import Access, access_to, granted, resolve
from agentmesh.shared.errors import AppError
from agentmesh.shared.events.contracts import personal_workspace
from agentmesh.shared.memberships import MembershipView

#: ``responses=`` of every router: the 403 of a role or an API key that may not.
FORBIDDEN: dict[int | str, dict[str, str]] = {
    403: {"description": "Your role in the workspace, or your API key's scopes, do not allow it"}
}
#: List and read agents, their versions, the tools catalog, providers and MCP servers.
AgentsRead = Annotated[Access, access_to("viewer", "agents:read")]
#: Create, update, delete and restore agents.
AgentsWrite = Annotated[Access, access_to("member", "agents:write")]
#: List and read knowledge bases and documents; search.
KnowledgeRead = Annotated[Access, access_to("viewer", "knowledge:read")]
#: Create, update and delete knowledge bases and documents.
KnowledgeWrite = Annotated[Access, access_to("member", "knowledge:write")]
#: Create, update, delete and test providers and MCP servers.
ProvidersWrite = Annotated[Access, access_to("admin", "providers:write")]


def can_see(access: Access | uuid.UUID, workspace_id: uuid.UUID) -> bool:
    """Whether a row of ``workspace_id`` exists for the caller (404 otherwise): ``access``
    is a caller's, or the workspace id a service asks within (the RPCs)."""
    if isinstance(access, uuid.UUID):
        return workspace_id == access
    return access.is_platform_admin or workspace_id == access.workspace_id


def sees_secrets(access: Access) -> bool:
    """Whether the caller may see the last 4 characters of providers' and MCP servers'
    secrets: admins and owners, and of API keys only those holding ``providers:write``."""
    scopes = access.principal.scopes
    return access.at_least("admin") and (not scopes or "providers:write" in granted(scopes))


def administers(access: Access, workspace_id: uuid.UUID, view: MembershipView | None) -> bool:
    """Whether the caller is an admin or owner of ``workspace_id`` itself: the platform
    admin role does not count here (``Access`` counts a platform admin as owner)."""
    if workspace_id != access.workspace_id:
        return False
    if not access.is_platform_admin:
        return access.at_least("admin")
    member = access.principal.model_copy(update={"roles": access.principal.roles - {"admin"}})
    try:
        return resolve(member, view).at_least("admin")
    except AppError:  # not a member of it at all
        return False


def asked_workspace(body: dict[str, Any]) -> uuid.UUID:
    """The workspace an RPC from chat asks within: ``workspace_id``, or, from a chat that
    predates workspaces, the user's personal one. ValueError/KeyError/TypeError when the
    body names neither properly."""
    user_id = uuid.UUID(str(body["user_id"]))
    workspace_id = body.get("workspace_id")
    return personal_workspace(user_id) if workspace_id is None else uuid.UUID(str(workspace_id))

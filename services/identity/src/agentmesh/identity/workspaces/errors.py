"""Problem types of workspaces."""

from agentmesh.shared.errors import Conflict, NotFound


class WorkspaceNotFound(NotFound):
    type, title = "workspace-not-found", "Workspace not found"


class PersonalWorkspace(Conflict):
    type, title = "personal-workspace", "Not possible on a personal workspace"


class LastOwner(Conflict):
    type, title = "last-owner", "The workspace needs an owner"


class InvitationNotFound(NotFound):
    type, title = "invitation-not-found", "Invitation not found"


class TransferOwnershipFirst(Conflict):
    type, title = "transfer-ownership-first", "Transfer ownership first"

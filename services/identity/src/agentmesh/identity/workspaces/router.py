"""Workspaces, members, invitations and ownership transfer (``/api/v1``)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response, status

from agentmesh.identity.deps import Caller, CurrentCaller, Events, Settings
from agentmesh.identity.workspaces import invitations, service
from agentmesh.identity.workspaces.errors import WorkspaceNotFound
from agentmesh.identity.workspaces.schemas import (
    InvitationAccept,
    InvitationCreate,
    InvitationCreated,
    InvitationOut,
    MemberOut,
    MemberUpdate,
    TransferRequest,
    WorkspaceCreate,
    WorkspaceDeletion,
    WorkspaceOut,
    WorkspaceUpdate,
)
from agentmesh.shared.db import Session
from agentmesh.shared.errors import Forbidden

router = APIRouter(prefix="/api/v1", tags=["workspaces"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such workspace (or not a member)"}
}
ROLE: dict[int | str, dict[str, Any]] = {
    403: {"description": "Your role in the workspace does not allow this"}
}


def _session_only(caller: Caller) -> None:
    if "akid" in caller.claims:
        raise Forbidden("This action needs a signed-in session; API keys cannot do it.")


async def _access(session, caller: Caller, workspace_id: uuid.UUID, needed: str):
    """The caller's access; an API key reaches only the workspace it belongs to."""
    if "akid" in caller.claims and caller.claims.get("wid") != str(workspace_id):
        raise WorkspaceNotFound("No such workspace.")
    return await service.access(session, caller.user, workspace_id, needed)


def _out(workspace, role: str) -> WorkspaceOut:
    return WorkspaceOut(
        id=workspace.id,
        name=workspace.name,
        personal=workspace.personal,
        role=role,
        created_at=workspace.created_at,
    )


@router.post("/workspaces", status_code=status.HTTP_201_CREATED, response_model=WorkspaceOut)
async def create_workspace(
    body: WorkspaceCreate, caller: CurrentCaller, session: Session, events: Events
) -> WorkspaceOut:
    """Create a workspace; you are its owner."""
    _session_only(caller)
    workspace = await service.create(session, events, caller.user, body.name)
    return _out(workspace, "owner")


@router.get("/workspaces", response_model=list[WorkspaceOut])
async def list_workspaces(caller: CurrentCaller, session: Session) -> list[WorkspaceOut]:
    """Your workspaces with your role in each, the personal one first."""
    rows = await service.list_for(session, caller.user.id)
    if "akid" in caller.claims:
        rows = [(w, r) for w, r in rows if str(w.id) == caller.claims.get("wid")]
    return [_out(workspace, role) for workspace, role in rows]


@router.get("/workspaces/{workspace_id}", response_model=WorkspaceOut, responses=NOT_FOUND)
async def get_workspace(
    workspace_id: uuid.UUID, caller: CurrentCaller, session: Session
) -> WorkspaceOut:
    found = await _access(session, caller, workspace_id, "viewer")
    return _out(found.workspace, found.role)


@router.patch(
    "/workspaces/{workspace_id}", response_model=WorkspaceOut, responses={**NOT_FOUND, **ROLE}
)
async def rename_workspace(
    workspace_id: uuid.UUID,
    body: WorkspaceUpdate,
    caller: CurrentCaller,
    session: Session,
    events: Events,
) -> WorkspaceOut:
    """Rename (owner)."""
    found = await _access(session, caller, workspace_id, "owner")
    await service.rename(session, events, found.workspace, body.name)
    return _out(found.workspace, found.role)


@router.delete(
    "/workspaces/{workspace_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=WorkspaceDeletion,
    responses={**NOT_FOUND, **ROLE, 409: {"description": "A personal workspace"}},
)
async def delete_workspace(
    workspace_id: uuid.UUID, caller: CurrentCaller, session: Session, events: Events
) -> WorkspaceDeletion:
    """Delete (owner): gone at once for every API; each service then deletes its data."""
    _session_only(caller)
    found = await _access(session, caller, workspace_id, "owner")
    await service.delete(session, events, found.workspace)
    return WorkspaceDeletion(id=workspace_id, status="deleting")


@router.post(
    "/workspaces/{workspace_id}/transfer",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **ROLE, 409: {"description": "A personal workspace"}},
)
async def transfer_ownership(
    workspace_id: uuid.UUID,
    body: TransferRequest,
    caller: CurrentCaller,
    session: Session,
    events: Events,
) -> None:
    """Hand ownership to an admin; you become an admin."""
    _session_only(caller)
    found = await _access(session, caller, workspace_id, "owner")
    await service.transfer(session, events, found, caller.user, body.user_id)


# ------------------------------------------------------------------ members


@router.get(
    "/workspaces/{workspace_id}/members", response_model=list[MemberOut], responses=NOT_FOUND
)
async def list_members(
    workspace_id: uuid.UUID, caller: CurrentCaller, session: Session
) -> list[MemberOut]:
    await _access(session, caller, workspace_id, "viewer")
    return [
        MemberOut(
            user_id=user.id,
            email=user.email,
            name=user.name,
            role=membership.role,
            joined_at=membership.joined_at,
        )
        for membership, user in await service.members(session, workspace_id)
    ]


@router.patch(
    "/workspaces/{workspace_id}/members/{user_id}",
    response_model=MemberOut,
    responses={**NOT_FOUND, **ROLE},
)
async def change_member_role(
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    body: MemberUpdate,
    caller: CurrentCaller,
    session: Session,
    events: Events,
) -> MemberOut:
    """Change a member's role (admin; making or unmaking admins is the owner's)."""
    found = await _access(session, caller, workspace_id, "admin")
    membership = await service.change_role(session, events, found, user_id, body.role)
    [(_, user)] = [
        (m, u) for m, u in await service.members(session, workspace_id) if u.id == user_id
    ]
    return MemberOut(
        user_id=user.id,
        email=user.email,
        name=user.name,
        role=membership.role,
        joined_at=membership.joined_at,
    )


@router.delete(
    "/workspaces/{workspace_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **NOT_FOUND,
        **ROLE,
        409: {"description": "The last owner, or a personal workspace"},
    },
)
async def remove_member(
    workspace_id: uuid.UUID,
    user_id: uuid.UUID,
    caller: CurrentCaller,
    session: Session,
    events: Events,
) -> None:
    """Remove a member (admin), or leave (your own id)."""
    found = await _access(session, caller, workspace_id, "viewer")
    await service.remove_member(session, events, found.workspace, caller.user, user_id)


# ------------------------------------------------------------------ invitations


@router.post(
    "/workspaces/{workspace_id}/invitations",
    status_code=status.HTTP_201_CREATED,
    response_model=InvitationCreated,
    responses={**NOT_FOUND, **ROLE, 409: {"description": "A personal workspace"}},
)
async def invite(
    workspace_id: uuid.UUID,
    body: InvitationCreate,
    caller: CurrentCaller,
    session: Session,
    settings: Settings,
    response: Response,
) -> InvitationCreated:
    """Invite an email with a role (admin). The token is shown this once."""
    found = await _access(session, caller, workspace_id, "admin")
    invitation, token = await invitations.invite(
        session,
        found,
        caller.user,
        email=body.email,
        role=body.role,
        ttl_seconds=settings.invitation_ttl_seconds,
    )
    response.headers["Cache-Control"] = "no-store"
    return InvitationCreated(**InvitationOut.model_validate(invitation).model_dump(), token=token)


@router.get(
    "/workspaces/{workspace_id}/invitations",
    response_model=list[InvitationOut],
    responses={**NOT_FOUND, **ROLE},
)
async def list_workspace_invitations(
    workspace_id: uuid.UUID, caller: CurrentCaller, session: Session
) -> list[InvitationOut]:
    await _access(session, caller, workspace_id, "admin")
    pending = await invitations.pending_of_workspace(session, workspace_id)
    return [InvitationOut.model_validate(invitation) for invitation in pending]


@router.delete(
    "/workspaces/{workspace_id}/invitations/{invitation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**NOT_FOUND, **ROLE},
)
async def revoke_invitation(
    workspace_id: uuid.UUID, invitation_id: uuid.UUID, caller: CurrentCaller, session: Session
) -> None:
    await _access(session, caller, workspace_id, "admin")
    await invitations.revoke(session, workspace_id, invitation_id)


@router.get("/invitations", response_model=list[InvitationOut])
async def my_invitations(caller: CurrentCaller, session: Session) -> list[InvitationOut]:
    """Invitations waiting for your account's email."""
    _session_only(caller)
    return [
        InvitationOut.model_validate(i) for i in await invitations.pending_for(session, caller.user)
    ]


@router.post(
    "/invitations/accept",
    response_model=WorkspaceOut,
    responses={404: {"description": "No such invitation for this account"}},
)
async def accept_by_token(
    body: InvitationAccept, caller: CurrentCaller, session: Session, events: Events
) -> WorkspaceOut:
    """Accept with the token from the invitation link."""
    _session_only(caller)
    workspace, membership = await invitations.accept(session, events, caller.user, token=body.token)
    return _out(workspace, membership.role)


@router.post(
    "/invitations/{invitation_id}/accept",
    response_model=WorkspaceOut,
    responses={404: {"description": "No such invitation for this account"}},
)
async def accept(
    invitation_id: uuid.UUID, caller: CurrentCaller, session: Session, events: Events
) -> WorkspaceOut:
    """Accept one of your pending invitations."""
    _session_only(caller)
    workspace, membership = await invitations.accept(
        session, events, caller.user, invitation_id=invitation_id
    )
    return _out(workspace, membership.role)

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from agentmesh.identity.users.schemas import EmailField

WorkspaceRole = Literal["owner", "admin", "member", "viewer"]
#: Roles an invitation or a role change may give; ownership moves only by transfer.
AssignableRole = Literal["admin", "member", "viewer"]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class WorkspaceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name


class WorkspaceOut(BaseModel):
    id: uuid.UUID
    name: str
    personal: bool
    role: WorkspaceRole = Field(description="The caller's role in this workspace")
    created_at: datetime


class MemberOut(BaseModel):
    user_id: uuid.UUID
    email: str
    name: str
    role: WorkspaceRole
    joined_at: datetime


class MemberUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: AssignableRole


class InvitationCreate(EmailField):
    model_config = ConfigDict(extra="forbid")

    role: AssignableRole = "member"


class InvitationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    workspace_id: uuid.UUID
    email: str
    role: AssignableRole
    created_at: datetime
    expires_at: datetime


class InvitationCreated(InvitationOut):
    token: str = Field(description="Shown once, for a link in an email; only its hash is kept.")


class InvitationAccept(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=256)


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace_id: uuid.UUID


class WorkspaceDeletion(BaseModel):
    id: uuid.UUID
    status: Literal["deleting"]

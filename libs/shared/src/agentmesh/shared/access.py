"""Who may do what in a workspace: one dependency every service authorizes with.

A caller's access comes from the verified token (``wid``: the workspace it is bound to,
``wrole``: the role there) checked against the replica's membership view
(``agentmesh.shared.memberships``): the view's role wins, so a removed member or a
lowered role takes effect as soon as the view hears of it, without waiting for tokens to
expire. API keys narrow further by their ``scopes`` (none: every permission of the role).
The platform ``admin`` role keeps its power everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from agentmesh.shared.auth import CurrentPrincipal, Principal
from agentmesh.shared.errors import AppError, Forbidden
from agentmesh.shared.memberships import ROLES, MembershipView, at_least

#: The scope vocabulary of API keys, with what each allows.
SCOPES: dict[str, str] = {
    "agents:read": "list and read agents and tools",
    "agents:write": "create, update and delete agents (implies agents:read)",
    "knowledge:read": "list and read knowledge bases and documents; search knowledge",
    "knowledge:write": "create, update and delete knowledge bases and documents "
    "(implies knowledge:read)",
    "providers:write": "create, update and delete model providers and MCP servers",
    "chat": "conversations, runs and the OpenAI-compatible /v1 API",
    "usage:read": "read usage and budgets",
    "workspace:admin": "manage the workspace's members, invitations and budgets",
    "admin": "platform administration (only for keys of platform admins)",
}
#: A scope that grants another: writing implies reading.
IMPLIES: dict[str, str] = {"agents:write": "agents:read", "knowledge:write": "knowledge:read"}


class MembershipRevoked(AppError):
    status, type, title = 401, "membership-revoked", "No longer a member"


class NoWorkspace(AppError):
    status, type, title = 401, "no-workspace", "Token bound to no workspace"


def granted(scopes: tuple[str, ...]) -> set[str]:
    """The scopes a key holds, implied ones included."""
    held = set(scopes)
    return held | {IMPLIES[s] for s in held if s in IMPLIES}


@dataclass(frozen=True)
class Access:
    """The caller's standing in the workspace their token is bound to."""

    principal: Principal
    workspace_id: uuid.UUID
    #: owner, admin, member or viewer (a platform admin counts as owner).
    role: str

    @property
    def user_id(self) -> uuid.UUID:
        return self.principal.user_id

    @property
    def is_platform_admin(self) -> bool:
        return self.principal.is_admin

    def at_least(self, role: str) -> bool:
        return at_least(self.role, role)


def resolve(principal: Principal, view: MembershipView | None) -> Access:
    """The caller's access, or an error that says why there is none."""
    if principal.workspace_id is None:
        raise NoWorkspace("This token is bound to no workspace; log in again.")
    role = principal.workspace_role
    if view is not None and view.ready:
        seen = view.seen(principal.workspace_id, principal.user_id)
        # Whichever is newer wins: the token's role, or what the view heard since. A
        # token issued before a removal or a lowered role gets the view's answer; one
        # issued after the view's last news about the member (just invited) keeps its own.
        issued = principal.issued_at
        if seen is not None and (issued is None or seen.at >= issued):
            role = seen.role
    if principal.is_admin:
        role = "owner"
    if role not in ROLES:
        raise MembershipRevoked(
            "You are no longer a member of this workspace; refresh or switch workspace."
        )
    return Access(principal=principal, workspace_id=principal.workspace_id, role=role)


def requires(
    role: str = "viewer", scope: str | None = None
) -> Callable[..., Coroutine[Any, Any, Access]]:
    """A dependency: the caller needs ``role`` in their workspace and, when their token
    carries scopes (an API key), ``scope``. 403 ``forbidden`` otherwise."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def dependency(request: Request, principal: CurrentPrincipal) -> Access:
        access = resolve(principal, getattr(request.app.state, "memberships", None))
        if not access.at_least(role):
            raise Forbidden(f"This needs the {role} role in the workspace; you are {access.role}.")
        if scope is not None and principal.scopes and scope not in granted(principal.scopes):
            raise Forbidden(f"This API key lacks the {scope!r} scope.")
        return access

    return dependency


def access_to(role: str = "viewer", scope: str | None = None) -> Any:
    """``Annotated[Access, access_to("member", "agents:write")]`` in a route signature."""
    return Depends(requires(role, scope))

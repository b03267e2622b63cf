"""Typed dependencies for what a service's app holds in ``app.state``.

A route asks for what it uses by type, ``outbox: AppOutbox``, instead of reaching into
``request.app.state``: its signature says what it needs, the type checker knows the type,
and a test can override it (``app.dependency_overrides``). Each service declares its own
aliases with ``from_state`` (``agents.deps``, ``identity.deps``, ``gateway.deps``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from agentmesh.shared.events.outbox import Outbox
from agentmesh.shared.memberships import MembershipView


def from_state(name: str) -> Any:
    """``Depends`` on ``request.app.state.<name>``, for an ``Annotated`` alias.

    The dependency is a coroutine: a plain function would run in the thread pool on
    every request."""

    async def dependency(request: Request) -> Any:
        return getattr(request.app.state, name)

    dependency.__name__ = f"app_state_{name}"
    return Depends(dependency)


#: The service's outbox (``ServiceRuntime``): events written in the request's transaction.
AppOutbox = Annotated[Outbox, from_state("outbox")]
#: The workspace memberships this replica has heard of.
AppMemberships = Annotated[MembershipView, from_state("memberships")]

"""What chat's routes take from the app, as typed ``Annotated`` dependencies
(``shared.deps``) instead of reading ``request.app.state``. The outbox and the
membership view are ``shared.deps``'s ``AppOutbox`` and ``AppMemberships``."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from agentmesh.chat.runs.hub import RunHub
from agentmesh.chat.state import ChatState
from agentmesh.shared.deps import from_state


async def _chat_state(request: Request) -> ChatState:
    """The app's state, which satisfies ``ChatState`` as it is (a coroutine, as
    ``from_state``'s dependencies are: no thread pool)."""
    return cast("ChatState", request.app.state)


#: The replica's shared objects, for a route that hands them to chat's core (the executor,
#: the hub, the settings: one dependency for all of them on the streaming paths).
AppState = Annotated[ChatState, Depends(_chat_state)]
#: This replica's runs and their events.
AppHub = Annotated[RunHub, from_state("hub")]

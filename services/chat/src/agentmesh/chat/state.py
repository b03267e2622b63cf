"""What chat's core reads from ``app.state``: the executor, the run store and memory, the
orphan watch and the OpenAI-compatible service take a ``ChatState``, not ``Any``.

``ServiceRuntime.create_app`` sets ``runtime``, ``settings``, ``sessionmaker`` and
``outbox``; chat's ``create_app`` adds ``hub``, ``agents_client``, ``profiles``,
``executor`` and ``run_watch``. Starlette's ``State`` holds them as plain attributes, so
the app's state satisfies this protocol as it is (``cast`` where mypy sees a ``State``;
routes take it as ``chat.deps.AppState``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from agentmesh.chat.agents_client import AgentsClient
    from agentmesh.chat.runs.executor import RunExecutor
    from agentmesh.chat.runs.hub import RunHub
    from agentmesh.chat.runs.templating import Profiles
    from agentmesh.chat.settings import ChatSettings
    from agentmesh.shared.events.outbox import Outbox
    from agentmesh.shared.runtime import ServiceRuntime


class ChatState(Protocol):
    """The chat replica's shared objects, as its core uses them."""

    runtime: ServiceRuntime
    settings: ChatSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    #: The engine's autocommit twin (``shared.db.create_reader``): one statement, no
    #: transaction around it.
    reader: AsyncEngine
    outbox: Outbox
    hub: RunHub
    agents_client: AgentsClient
    executor: RunExecutor
    profiles: Profiles

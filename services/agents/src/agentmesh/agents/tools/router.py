from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from agentmesh.agents.tools.catalog import BUILTIN_TOOLS
from agentmesh.agents.workspaces import FORBIDDEN, AgentsRead

router = APIRouter(prefix="/api/v1/tools", tags=["tools"], responses=FORBIDDEN)


@router.get("")
async def list_tools(_: AgentsRead) -> list[dict[str, Any]]:
    """The built-in tools an agent can list in ``tools``, with JSON schemas for their
    arguments (``parameters``) and for their per-agent ``config``."""
    return [{"id": tool_id, **spec} for tool_id, spec in BUILTIN_TOOLS.items()]

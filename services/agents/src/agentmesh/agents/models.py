"""Every table of the ``agents`` schema (Alembic reads ``metadata`` from here)."""

from agentmesh.agents.agents.models import Agent, AgentVersion
from agentmesh.agents.base import EVENT_TABLES, SCHEMA, Base
from agentmesh.agents.knowledge.models import Chunk, Document, KnowledgeBase
from agentmesh.agents.mcp.models import McpServer
from agentmesh.agents.providers.models import Provider

metadata = Base.metadata

__all__ = [
    "EVENT_TABLES",
    "SCHEMA",
    "Agent",
    "AgentVersion",
    "Chunk",
    "Document",
    "KnowledgeBase",
    "McpServer",
    "Provider",
    "metadata",
]

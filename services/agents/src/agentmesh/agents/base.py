"""The ``agents`` schema's declarative base and its event tables."""

from agentmesh.shared.db import make_base
from agentmesh.shared.events.tables import event_tables

SCHEMA = "agents"

Base = make_base(SCHEMA)
EVENT_TABLES = event_tables(Base.metadata)

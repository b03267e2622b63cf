"""Tables of the ``chat`` schema."""

from agentmesh.shared.db import make_base
from agentmesh.shared.events.tables import event_tables

SCHEMA = "chat"

Base = make_base(SCHEMA)
metadata = Base.metadata
EVENT_TABLES = event_tables(metadata)

"""Tables of the ``identity`` schema."""

from agentmesh.shared.db import make_base
from agentmesh.shared.events.tables import event_tables

SCHEMA = "identity"

Base = make_base(SCHEMA)
metadata = Base.metadata
EVENT_TABLES = event_tables(metadata)

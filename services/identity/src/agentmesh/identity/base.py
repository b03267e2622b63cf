"""The ``identity`` schema's declarative base and its event tables."""

from sqlalchemy.orm import DeclarativeBase

from agentmesh.shared.db import make_metadata
from agentmesh.shared.events.tables import event_tables

SCHEMA = "identity"


class Base(DeclarativeBase):
    metadata = make_metadata(SCHEMA)


EVENT_TABLES = event_tables(Base.metadata)

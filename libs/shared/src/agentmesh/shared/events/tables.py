"""The outbox and inbox tables, created in each service's own schema."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.engine import Connection


@dataclass(frozen=True)
class EventTables:
    """The outbox and inbox of one service schema."""

    schema: str
    outbox: Table
    inbox: Table

    @property
    def notify_channel(self) -> str:
        """The LISTEN/NOTIFY channel an insert into the outbox signals."""
        return f"agentmesh_outbox_{self.schema}"


def event_tables(metadata: MetaData) -> EventTables:
    """Define ``outbox`` and ``inbox`` on ``metadata`` (whose ``schema`` is the service's)."""
    schema = metadata.schema
    if not schema:
        raise ValueError("event tables need a metadata bound to a service schema")
    outbox = Table(
        "outbox",
        metadata,
        # The sequence gives publish order; ordering per aggregate relies on it.
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("event_id", UUID(as_uuid=False), nullable=False, unique=True),
        Column("subject", Text, nullable=False),
        Column("subject_id", Text, nullable=False),
        Column("envelope", JSONB, nullable=False),
        Column("headers", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True)),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("last_error", Text),
        Index("ix_outbox_unsent", "id", postgresql_where=text("sent_at IS NULL")),
        Index(
            "ix_outbox_unsent_subject_id", "subject_id", postgresql_where=text("sent_at IS NULL")
        ),
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    )
    inbox = Table(
        "inbox",
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", UUID(as_uuid=False), nullable=False),
        Column("subject", Text, nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id", name="pk_inbox"),
        Index("ix_inbox_processed_at", "processed_at"),
    )
    return EventTables(schema=schema, outbox=outbox, inbox=inbox)


def create_event_tables(connection: Connection, tables: EventTables) -> None:
    """Create both tables and the NOTIFY trigger; call from a service's first migration.

    The trigger fires once per inserting statement and its NOTIFY is delivered at commit,
    so the relay wakes right after the transaction lands and never sees a rolled-back row.
    """
    tables.outbox.create(connection)
    tables.inbox.create(connection)
    schema, channel = tables.schema, tables.notify_channel
    connection.exec_driver_sql(
        f"""
        CREATE FUNCTION "{schema}".outbox_notify() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{channel}', '');
            RETURN NULL;
        END $$;
        """
    )
    connection.exec_driver_sql(
        f"""
        CREATE TRIGGER outbox_notify AFTER INSERT ON "{schema}".outbox
        FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".outbox_notify();
        """
    )


def drop_event_tables(connection: Connection, tables: EventTables) -> None:
    """Undo ``create_event_tables`` (a migration's downgrade)."""
    connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{tables.schema}".outbox CASCADE')
    connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{tables.schema}".inbox CASCADE')
    connection.exec_driver_sql(f'DROP FUNCTION IF EXISTS "{tables.schema}".outbox_notify()')

"""The envelope every AgentMesh event travels in."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import uuid_utils
from pydantic import BaseModel, ConfigDict, Field


def uuid7() -> str:
    """A time-ordered UUIDv7, as a string."""
    return str(uuid_utils.uuid7())


class EventPayload(BaseModel):
    """Base of every event's ``data``. Subclasses set ``subject``, ``version`` and
    ``aggregate_field`` (the field holding the aggregate id, copied to ``subject_id``).

    Unknown fields are ignored on read so that a newer producer never breaks an older
    consumer; a breaking change gets a new ``version``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    subject: ClassVar[str]
    version: ClassVar[int] = 1
    aggregate_field: ClassVar[str]
    description: ClassVar[str] = ""

    @property
    def subject_id(self) -> str:
        return str(getattr(self, self.aggregate_field))


class Envelope(BaseModel):
    """What goes on the wire: CloudEvents-like metadata around the payload.

    Trace context and the request id travel in NATS headers, not here.
    """

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=uuid7, description="UUIDv7; also the Nats-Msg-Id")
    type: str = Field(description="The subject, e.g. identity.user.registered")
    source: str = Field(description="The publishing service")
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject_id: str = Field(description="The aggregate id")
    version: int = Field(ge=1, description="The payload schema version")
    data: dict[str, Any]

    @classmethod
    def wrap(cls, payload: EventPayload, *, source: str) -> Envelope:
        """Put ``payload`` in a new envelope from ``source``."""
        return cls(
            type=payload.subject,
            source=source,
            subject_id=payload.subject_id,
            version=payload.version,
            data=payload.model_dump(mode="json"),
        )

"""Each service's AsyncAPI document, generated from the shared contracts."""

from __future__ import annotations

from typing import Any

from faststream.nats import JStream, NatsBroker
from faststream.specification import AsyncAPI
from pydantic import create_model

from agentmesh.shared.events.contracts import CATALOG
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.events.streams import stream_name


def document_publications(broker: NatsBroker, service: str) -> None:
    """Declare (for the document only) every event ``service`` publishes via its outbox."""
    for subject, payload in CATALOG.items():
        if not subject.startswith(service + "."):
            continue
        event_model = create_model(
            f"{payload.__name__}Event",
            __base__=Envelope,
            data=(payload, ...),
        )
        broker.publisher(
            subject,
            stream=JStream(name=stream_name(service), declare=False),
            schema=event_model,
            title=subject,
            description=f"{payload.description} Payload version {payload.version}.",
        )


def asyncapi_document(broker: NatsBroker, service: str, version: str) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of ``service``'s publishers and subscribers."""
    spec = AsyncAPI(
        broker,
        title=f"AgentMesh {service} events",
        version=version,
        description=f"Events the {service} service publishes and consumes over NATS JetStream.",
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return document

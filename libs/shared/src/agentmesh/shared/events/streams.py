"""JetStream streams: one per publishing service, plus the dead-letter stream.

A stream captures only the event aggregates of its service (``identity.user.>`` …), not
the whole ``identity.>`` space that ARCHITECTURE.md names: ``agents.rpc.*`` request/reply
subjects and the core ``chat.run.<id>`` token streams must not be captured, or JetStream
would answer RPC requests with a PubAck and persist every token.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from agentmesh.shared.events.contracts import CATALOG
from agentmesh.shared.settings import CommonSettings

#: JetStream deduplicates on Nats-Msg-Id inside this window (ARCHITECTURE: >= 2 minutes).
DUPLICATE_WINDOW_SECONDS = 300
DLQ_STREAM = "DLQ"
#: Run events (``chat.run.<run_id>``), published on core NATS and kept a few hours so a
#: client can resume a stream on any chat replica with Last-Event-ID.
RUNS_STREAM = "CHAT_RUNS"
RUNS_SUBJECT_PREFIX = "chat.run."
RUNS_MAX_AGE_SECONDS = 6 * 3600
#: And at most this many bytes (``AGENTMESH_RUNS_STREAM_MAX_BYTES``): many long runs at
#: once must not fill the server's disk; the oldest events go first.
RUNS_MAX_BYTES: int = CommonSettings.model_fields["runs_stream_max_bytes"].default
SERVICES = ("identity", "agents", "chat")


def stream_name(service: str) -> str:
    return service.upper()


def stream_subjects(service: str) -> list[str]:
    """``<service>.<aggregate>.>`` for every aggregate of ``service`` in the catalog."""
    aggregates = sorted({s.split(".")[1] for s in CATALOG if s.startswith(service + ".")})
    return [f"{service}.{aggregate}.>" for aggregate in aggregates]


def dlq_subject(service: str, subject: str) -> str:
    return f"dlq.{service}.{subject}"


def stream_configs(replicas: int = 1, runs_max_bytes: int = RUNS_MAX_BYTES) -> list[StreamConfig]:
    """Every stream AgentMesh uses, ready for ``js.add_stream`` / ``update_stream``."""
    configs = [
        StreamConfig(
            name=stream_name(service),
            subjects=stream_subjects(service),
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=14 * 24 * 3600,
            num_replicas=replicas,
        )
        for service in SERVICES
    ]
    configs.append(
        StreamConfig(
            name=DLQ_STREAM,
            subjects=["dlq.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            duplicate_window=DUPLICATE_WINDOW_SECONDS,
            max_age=30 * 24 * 3600,
            num_replicas=replicas,
        )
    )
    configs.append(
        StreamConfig(
            name=RUNS_STREAM,
            subjects=[RUNS_SUBJECT_PREFIX + ">"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=RUNS_MAX_AGE_SECONDS,
            max_bytes=runs_max_bytes,
            num_replicas=replicas,
        )
    )
    return configs


async def ensure_streams(
    js: JetStreamContext, replicas: int = 1, runs_max_bytes: int = RUNS_MAX_BYTES
) -> None:
    """Create or update every stream; safe to run from every replica at start-up."""
    from nats.js.errors import NotFoundError

    for config in stream_configs(replicas, runs_max_bytes):
        try:
            assert config.name is not None  # every config above is named
            await js.stream_info(config.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)

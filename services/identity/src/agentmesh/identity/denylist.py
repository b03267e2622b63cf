"""Identity writes the platform's deny list (``agentmesh.shared.denylist``) from its own
events, once they are committed and published: a deactivated user, ended sessions and a
revoked API key. Durable JetStream consumers, so an entry is written even when NATS was
away at the time (the events wait in the outbox); a KV put is idempotent, so a
redelivery needs no inbox. No database transaction is open while it talks to NATS."""

from __future__ import annotations

import logging
import time
from typing import Any

from faststream.middlewares import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsMessage, PullSub
from nats.js.api import DeliverPolicy

from agentmesh.identity.settings import IdentitySettings
from agentmesh.shared import denylist
from agentmesh.shared.events.contracts import ApiKeyRevoked, SessionsRevoked, UserDeactivated
from agentmesh.shared.events.envelope import Envelope
from agentmesh.shared.events.streams import stream_name
from agentmesh.shared.runtime import ServiceRuntime

logger = logging.getLogger("agentmesh.identity.denylist")

#: Verifiers accept tokens this long past ``exp``.
LEEWAY_SECONDS = 60
RETRY_SECONDS = 1.0


def entries(
    envelope: Envelope, settings: IdentitySettings
) -> list[tuple[str, float, float | None]]:
    """(key, until, issued_before) for the deny list, from one of identity's events."""
    at = envelope.time.timestamp()
    longest = max(settings.access_token_ttl_seconds, settings.api_key_token_ttl_seconds)
    if envelope.type == UserDeactivated.subject:
        user = UserDeactivated.model_validate(envelope.data)
        # Tokens issued up to now; a re-activated user's new tokens are not refused.
        return [(denylist.user_key(user.user_id), at + longest + LEEWAY_SECONDS, at)]
    if envelope.type == SessionsRevoked.subject:
        sessions = SessionsRevoked.model_validate(envelope.data)
        until = at + settings.access_token_ttl_seconds + LEEWAY_SECONDS
        return [(denylist.session_key(sid), until, None) for sid in sessions.session_ids]
    if envelope.type == ApiKeyRevoked.subject:
        key = ApiKeyRevoked.model_validate(envelope.data)
        until = at + settings.api_key_token_ttl_seconds + LEEWAY_SECONDS
        return [(denylist.api_key_key(key.api_key_id), until, None)]
    return []


def register(runtime: ServiceRuntime, settings: IdentitySettings) -> None:
    broker = runtime.broker
    assert broker is not None
    replicas = settings.common.stream_replicas

    async def write(body: bytes, msg: NatsMessage) -> None:
        try:
            envelope = Envelope.model_validate_json(body)
            for key, until, issued_before in entries(envelope, settings):
                if until > time.time():  # a replayed old event needs no entry
                    await denylist.deny(
                        broker.config.connection_state.stream,
                        key,
                        until=until,
                        issued_before=issued_before,
                        replicas=replicas,
                    )
        except ValueError:
            logger.warning("malformed event skipped by the deny-list writer")
            await msg.ack()
            return
        except Exception as exc:
            logger.warning("cannot write the deny list; retrying", extra={"error": repr(exc)})
            await msg.nack(delay=RETRY_SECONDS)
            return
        await msg.ack()

    for subject in (UserDeactivated.subject, SessionsRevoked.subject, ApiKeyRevoked.subject):
        durable = f"identity-denylist-{subject.split('.', 1)[1].replace('.', '-')}"
        broker.subscriber(
            subject,
            stream=JStream(name=stream_name("identity"), declare=False),
            durable=durable,
            config=ConsumerConfig(
                durable_name=durable, deliver_policy=DeliverPolicy.ALL, ack_wait=30
            ),
            pull_sub=PullSub(batch_size=16, timeout=1.0),
            ack_policy=AckPolicy.MANUAL,
            decoder=_raw_body,
            title=durable,
            description=f"identity writes the deny list from {subject}",
        )(_named(write, durable))


def _named(handler: Any, durable: str) -> Any:
    async def consume(body: bytes, msg: NatsMessage) -> None:
        await handler(body, msg)

    consume.__name__ = durable.replace("-", "_")
    return consume


async def _raw_body(msg: Any) -> bytes:
    return msg.body

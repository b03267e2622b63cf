"""``agents.rpc.knowledge.search``: chat's ``knowledge_search`` tool, over NATS request/reply.

The same search as ``POST /knowledge-bases/{id}/search``, across the agent's knowledge
bases, within one workspace (``workspace_id``; without it, from an older chat, the user's
personal workspace): a knowledge base of another workspace is refused, whatever the agent
config says. Services only (the internal token), like the credentials RPC.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel, Field, ValidationError

from agentmesh.agents.knowledge import service
from agentmesh.agents.knowledge.embedding import Embedder, EmbeddingUnreachable
from agentmesh.agents.knowledge.schemas import SearchMode
from agentmesh.shared.errors import NotFound
from agentmesh.shared.events.contracts import personal_workspace

SUBJECT = "agents.rpc.knowledge.search"
logger = logging.getLogger("agentmesh.agents.rpc")


class SearchCall(BaseModel):
    user_id: uuid.UUID
    workspace_id: uuid.UUID | None = None
    knowledge_base_ids: list[uuid.UUID] = Field(min_length=1, max_length=32)
    query: str = Field(min_length=1, max_length=2000)
    top_k: int = Field(default=5, ge=1, le=50)
    mode: SearchMode = "hybrid"
    filter: dict[str, Any] = Field(default_factory=dict)


def register(
    broker: NatsBroker,
    sessionmaker: Any,
    embedder: Embedder,
    internal_token: str,
    ef_search: int,
    keyword_candidate_cap: int,
) -> None:
    from agentmesh.agents.deps import same_secret

    @broker.subscriber(
        SUBJECT,
        queue="agents-rpc",
        title=SUBJECT,
        description="Search a workspace's knowledge bases (services only)",
    )
    async def knowledge_search(body: dict[str, Any], msg: NatsMessage) -> dict[str, Any]:
        token = (msg.raw_message.headers or {}).get("Authorization", "").removeprefix("Bearer ")
        if not internal_token or not same_secret(token, internal_token):
            logger.warning("knowledge search request without the service credential")
            return {"error": "unauthorized"}
        try:
            call = SearchCall.model_validate(body)
        except ValidationError as exc:
            return {"error": "bad_request", "detail": str(exc.errors()[0]["msg"])}
        workspace_id = call.workspace_id or personal_workspace(call.user_id)
        kbs = []
        async with sessionmaker() as session:  # closed before any embedding call
            for kb_id in dict.fromkeys(call.knowledge_base_ids):
                try:
                    kb = await service.get_owned(session, workspace_id, kb_id)
                except NotFound:
                    return {"error": "not_found", "knowledge_base_id": str(kb_id)}
                kbs.append((kb, await embedder.for_kb(session, kb)))
        try:
            vectors = [await service.embed_query(model, call.query, call.mode) for _, model in kbs]
        except EmbeddingUnreachable as exc:  # the user's endpoint: say so, at once
            return {"error": "embedding_unreachable", "detail": exc.detail}
        hits = []
        async with sessionmaker() as session, session.begin():
            for (kb, _), vector in zip(kbs, vectors, strict=True):
                hits += await service.search(
                    session,
                    vector,
                    kb,
                    query=call.query,
                    top_k=call.top_k,
                    mode=call.mode,
                    filter=call.filter,
                    ef_search=ef_search,
                    keyword_candidate_cap=keyword_candidate_cap,
                )
        hits.sort(key=lambda hit: -hit.score)
        return {"results": [hit.model_dump(mode="json") for hit in hits[: call.top_k]]}

"""Which LangChain ``Embeddings`` a knowledge base uses: the local model, or a remote one.

The remote kind is any OpenAI-compatible ``/v1/embeddings`` (an ``openai`` provider of the
knowledge base's owner), asked for the knowledge base's dimension. Chunks live in one
``vector(384)`` column with one HNSW index, so every knowledge base has 384 dimensions:
OpenAI's ``text-embedding-3-*`` and most servers honour ``dimensions``; a model that
returns another size fails the document with that reason.
"""

from __future__ import annotations

import uuid
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from agentmesh.agents.embeddings.local import DIMENSION, MODEL_NAME, LocalMiniLM
from agentmesh.agents.knowledge.models import KnowledgeBase
from agentmesh.agents.providers import service as providers
from agentmesh.agents.providers.models import Provider
from agentmesh.shared import outbound
from agentmesh.shared.crypto import SecretBox
from agentmesh.shared.errors import AppError
from agentmesh.shared.outbound import ClientCache, OutboundPolicy

SUPPORTED_DIMENSIONS = (DIMENSION,)


class InvalidEmbeddingConfig(AppError):
    status, type, title = 422, "invalid-reference", "Unprocessable Content"


class EmbeddingUnreachable(AppError):
    """The user's embedding endpoint failed: their dependency, not this service (502)."""

    status, type, title = 502, "embedding-unreachable", "Embedding endpoint unreachable"


async def embed_query(model: Embeddings, query: str) -> list[float]:
    """``model.aembed_query``; a remote endpoint's failure is an ``EmbeddingUnreachable``."""
    import openai

    try:
        return await model.aembed_query(query)
    except (openai.APIConnectionError, openai.APIStatusError) as exc:  # timeouts included
        status = getattr(exc, "status_code", None)
        reason = f"answered HTTP {status}" if status else "could not be reached"
        raise EmbeddingUnreachable(
            f"The knowledge base's embedding endpoint {reason}.",
            extra={"provider_status": status} if status else None,
        ) from None


class _Remote:
    """A remote embedder and the guarded HTTP client it owns (closed when dropped)."""

    def __init__(self, embeddings: Embeddings, http: Any) -> None:
        self.embeddings, self.http = embeddings, http

    async def aclose(self) -> None:
        await self.http.aclose()


class Embedder:
    """Resolves a knowledge base's embeddings; the local model is loaded once.

    Remote embedders (each holds a decrypted key and an SDK client) are cached, at most
    ``cache_size`` for ``cache_ttl`` seconds, keyed by provider and its last change; a
    dropped one has its HTTP client closed once no task uses it."""

    def __init__(
        self,
        local: LocalMiniLM,
        box: SecretBox,
        timeout: float = 30.0,
        policy: OutboundPolicy | bool = False,
        *,
        cache_size: int = 64,
        cache_ttl: float = 300,
    ) -> None:
        self.local = local
        self.box = box
        self.timeout = timeout
        self.policy = policy
        # max_hold: an ingest worker that lives for long never pins a dropped client.
        self.remotes: ClientCache[_Remote] = ClientCache(
            maxsize=cache_size, ttl=cache_ttl, close=_Remote.aclose, max_hold=2 * cache_ttl
        )

    async def for_kb(self, session: AsyncSession, kb: KnowledgeBase) -> Embeddings:
        if kb.embedding_provider_id is None:
            return self.local
        provider = await session.get(Provider, kb.embedding_provider_id)
        if provider is None:
            raise InvalidEmbeddingConfig("The knowledge base's embedding provider was deleted.")
        key = (provider.id, provider.updated_at, kb.embedding_model, kb.dimension)
        return self.remotes.get(
            key,
            lambda: self.remote(
                providers.credentials(self.box, provider),
                kb.embedding_model,
                kb.dimension,
            ),
        ).embeddings

    def remote(self, creds: dict[str, Any], model: str, dimension: int) -> _Remote:
        """An OpenAI-compatible embedder whose HTTP client is ``outbound``'s (every call
        checks ``base_url`` against the policy)."""
        from langchain_openai import OpenAIEmbeddings

        http = outbound.async_client2(self.policy, keepalive=True)
        embeddings = OpenAIEmbeddings(
            model=model,
            openai_api_base=creds["base_url"],
            openai_api_key=SecretStr(creds["api_key"] or "unused"),
            dimensions=dimension,
            check_embedding_ctx_length=False,  # send text, not tiktoken ids (offline-safe)
            max_retries=2,
            request_timeout=self.timeout,
            http_async_client=http,
            http_client=outbound.refusing_sync_client2(),
        )
        return _Remote(embeddings, http)


async def check_config(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    provider_id: uuid.UUID | None,
    model: str | None,
    dimension: int,
) -> str:
    """Validate an embedding choice (a provider of ``workspace_id``); returns the model
    name to store."""
    if dimension not in SUPPORTED_DIMENSIONS:
        raise InvalidEmbeddingConfig(
            f"dimension: this deployment indexes {DIMENSION}-dimensional vectors.",
            extra={"field": "dimension"},
        )
    if provider_id is None:
        if model not in (None, MODEL_NAME):
            raise InvalidEmbeddingConfig(
                f"embedding_model: the local model is {MODEL_NAME!r}; name a provider for others.",
                extra={"field": "embedding_model"},
            )
        return MODEL_NAME
    provider = await session.get(Provider, provider_id)
    if provider is None or provider.workspace_id != workspace_id:
        raise InvalidEmbeddingConfig(
            "embedding_provider_id: no such provider in this workspace.",
            extra={"field": "embedding_provider_id"},
        )
    if provider.kind != "openai":
        raise InvalidEmbeddingConfig(
            "embedding_provider_id: remote embeddings need an OpenAI-compatible provider.",
            extra={"field": "embedding_provider_id"},
        )
    if not model:
        raise InvalidEmbeddingConfig(
            "embedding_model: name the provider's embedding model.",
            extra={"field": "embedding_model"},
        )
    return model

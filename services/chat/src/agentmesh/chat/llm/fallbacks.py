"""An agent's model and its fallbacks, tried in order when one fails before answering.

A fallback is tried when a model call fails with what ``stream_with_retry`` retries (a rate
limit, a 5xx, a timeout, a refused connection) and its retries are spent, before the
model's first token. After the first token the failure is ``StreamInterrupted`` and ends
the run as it did without fallbacks: the client saw part of an answer that another model
would contradict. Other failures (bad credentials, an unknown model, a rejected request)
are the agent's configuration and fail at once, as they would again on every fallback of
the same provider.

The model that answered stays for the rest of the run (its later tool steps), so one run
is one model's answer; a later step that fails goes on down the list from there. The run
records who answered (``Served``): the model, the provider kind and ``fallback_index``
(null for the agent's own model, else the position in the agent's ``fallbacks``).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import AIMessageChunk, BaseMessage

from agentmesh.chat.llm.streaming import ModelCallFailed, StreamInterrupted, stream_with_retry
from agentmesh.shared.errors import AppError

logger = logging.getLogger("agentmesh.chat.llm")


@dataclass(frozen=True)
class Candidate:
    """One model to try: the agent's own (``index`` None) or one of its fallbacks."""

    index: int | None
    provider_id: str | None
    model: str

    def config(self, base: dict[str, Any]) -> dict[str, Any]:
        """The agent's config with this model (and provider) in place of its own."""
        return {**base, "provider_id": self.provider_id, "model": self.model}


def candidates(config: dict[str, Any]) -> list[Candidate]:
    """The agent's model, then its fallbacks; a fallback without ``provider_id`` uses the
    agent's own provider (the built-in offline one when it has none)."""
    own = config.get("provider_id")
    own = None if own is None else str(own)
    chain = [Candidate(None, own, str(config.get("model") or "offline"))]
    for index, fallback in enumerate(config.get("fallbacks") or []):
        provider = fallback.get("provider_id")
        chain.append(
            Candidate(index, own if provider is None else str(provider), str(fallback["model"]))
        )
    return chain


@dataclass
class Served:
    """The model now answering a run: what the run records and prices by."""

    model: str
    provider: str
    fallback_index: int | None = None
    #: The LangChain model itself (for the run's later uses, e.g. the title).
    chat: Any = field(default=None, repr=False, compare=False)


#: Builds a candidate's LangChain model and provider label (kind, or ``offline``).
Resolve = Callable[[Candidate], Awaitable[tuple[Any, str]]]
#: Binds a model to the run's tools and output format: (model, provider label) -> runnable.
Bind = Callable[[Any, str], Any]


def falls_back(failure: ModelCallFailed) -> bool:
    """Whether another model may answer after this failure: one retrying could fix (rate
    limit, 5xx, timeout, unreachable), that came before any output."""
    return failure.retryable and not isinstance(failure, StreamInterrupted)


class ModelChain:
    """Streams a run's model calls, moving down the agent's fallbacks as models fail."""

    def __init__(self, chain: Sequence[Candidate], resolve: Resolve, served: Served) -> None:
        self.chain = list(chain)
        self.resolve = resolve
        #: The agent's own model (already resolved) at first; updated in place on a switch.
        self.served = served
        self.position = 0
        self._bound: Any = None

    async def stream(
        self, messages: Sequence[BaseMessage], bind: Bind, *, attempts: int
    ) -> AsyncIterator[AIMessageChunk]:
        """One model call's chunks, from the first model of the chain (from the one now
        answering) that gives any; the last failure when none does."""
        while True:
            try:
                if self._bound is None:  # bound once per model, not per tool step
                    self._bound = bind(self.served.chat, self.served.provider)
                async for chunk in stream_with_retry(self._bound, messages, attempts=attempts):
                    yield chunk
                return
            except ModelCallFailed as exc:
                if not falls_back(exc) or not await self._next(exc):
                    raise

    async def _next(self, failure: AppError) -> bool:
        """Move to the next candidate that can be set up; False when none is left (then
        the caller raises ``failure``, or the last set-up error)."""
        while self.position + 1 < len(self.chain):
            self.position += 1
            candidate = self.chain[self.position]
            logger.warning(
                "model failed; trying a fallback",
                extra={
                    "problem": failure.type,
                    "failed_model": self.served.model,
                    "fallback_index": candidate.index,
                    "model": candidate.model,
                },
            )
            try:
                chat, provider = await self.resolve(candidate)
            except AppError as exc:  # its provider gone, its address refused, agents down
                logger.warning(
                    "fallback model not usable",
                    extra={"problem": exc.type, "fallback_index": candidate.index},
                )
                self._serve(Served(candidate.model, "unknown", candidate.index))
                if self.position + 1 == len(self.chain):
                    raise
                failure = exc
                continue
            self._serve(Served(candidate.model, provider, candidate.index, chat))
            return True
        return False

    def _serve(self, served: Served) -> None:
        self.served.model, self.served.provider = served.model, served.provider
        self.served.fallback_index, self.served.chat = served.fallback_index, served.chat
        self._bound = None

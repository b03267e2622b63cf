"""Streaming a chat model with our own retry policy and clean errors.

A failed call is retried (429, 5xx, timeouts, connection errors) only while nothing has
reached the caller yet. Once a token has been streamed, a retry would repeat or contradict
it, so the failure becomes ``StreamInterrupted``. Errors that retrying cannot fix (401,
400, a malformed response) fail at once. Every failure is a ``ModelCallFailed``, a
problem-detail error whose text never carries the provider's raw message for auth errors,
nor anything that looks like a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

import httpx
import openai
from langchain_core import exceptions as lc
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from agentmesh.shared.errors import AppError, problem_type

try:  # the openai SDK 3.x transport; its errors are wrapped by the SDK, but not always
    import httpx2

    _TIMEOUTS: tuple[type[BaseException], ...] = (httpx.TimeoutException, httpx2.TimeoutException)
    _TRANSPORT: tuple[type[BaseException], ...] = (httpx.TransportError, httpx2.TransportError)
except ImportError:  # pragma: no cover
    _TIMEOUTS, _TRANSPORT = (httpx.TimeoutException,), (httpx.TransportError,)

logger = logging.getLogger("agentmesh.chat.llm")

_SECRETS = re.compile(
    r"(?i)(bearer\s+|api[_-]?key[\"'\s:=]+)\S+|\b(?:sk|am|pk|rk)[-_][A-Za-z0-9_\-*]{6,}"
)


class ModelCallFailed(AppError):
    """The model call failed; ``type``/``title``/``detail`` are safe to show a client."""

    status, type, title = 502, "model-call-failed", "Model call failed"

    def __init__(
        self,
        detail: str | None = None,
        *,
        type: str | None = None,
        status: int | None = None,
        retryable: bool = False,
        provider_status: int | None = None,
    ) -> None:
        super().__init__(detail, type=type, status=status)
        self.retryable = retryable
        self.provider_status = provider_status

    def problem(self) -> dict[str, Any]:
        """The problem-details body, e.g. for a ``run.failed`` event."""
        body = {"type": problem_type(self.type), "title": self.title, "status": self.status}
        return body | ({"detail": self.detail} if self.detail else {})


class StreamInterrupted(ModelCallFailed):
    """The stream failed after tokens reached the caller; it is not retried."""

    status, type, title = 502, "model-stream-interrupted", "Model stream interrupted"

    def __init__(self, cause: ModelCallFailed) -> None:
        super().__init__(
            f"The model's answer broke off mid-stream. {cause.detail}",
            provider_status=cause.provider_status,
        )
        self.cause_type = cause.type


async def stream_with_retry(
    model: Runnable[LanguageModelInput, BaseMessage],
    messages: Sequence[BaseMessage],
    *,
    attempts: int = 3,
    base_delay: float = 0.2,
    max_delay: float = 8.0,
    config: RunnableConfig | None = None,
) -> AsyncIterator[AIMessageChunk]:
    """Stream ``model`` on ``messages``: chunks of one successful attempt, or a clean error.

    Retries with exponential backoff and jitter (at least the provider's ``Retry-After``,
    at most ``max_delay``), up to ``attempts`` calls in all. Chunks that carry no output
    (role-only openers) are held back until output arrives, so a retried attempt never
    leaves stray chunks from an earlier one. Raises ``ModelCallFailed``, or its subclass
    ``StreamInterrupted`` when the failure comes after output was yielded.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        held: list[AIMessageChunk] = []
        delivered = False
        try:
            # A chat model streams AIMessageChunks from an async generator; the Runnable
            # signature only promises BaseMessages from an iterator.
            stream_of = cast(
                AsyncGenerator[AIMessageChunk, None],
                model.astream(list(messages), config=config),
            )
            async with contextlib.aclosing(stream_of) as stream:
                async for chunk in stream:
                    if not delivered and not (chunk.content or chunk.tool_call_chunks):
                        held.append(chunk)
                        continue
                    if not delivered:
                        delivered = True
                        for early in held:
                            yield early
                    yield chunk
        except Exception as exc:
            failure = classify_error(exc)
            cause = exc if failure.type == ModelCallFailed.type else None
            if delivered:
                logger.warning("model stream interrupted", extra={"problem": failure.type})
                raise StreamInterrupted(failure) from cause
            if not failure.retryable or attempt == attempts:
                logger.warning(
                    "model call failed", extra={"problem": failure.type, "attempt": attempt}
                )
                raise failure from cause
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            delay += random.uniform(0, delay / 2)  # noqa: S311 - jitter, not cryptography
            delay = min(max_delay, max(delay, _retry_after(exc) or 0.0))
            logger.info(
                "model call failed; retrying",
                extra={"problem": failure.type, "attempt": attempt, "delay_s": round(delay, 3)},
            )
            await asyncio.sleep(delay)
            continue
        for early in held:  # an answer with no output at all still has its usage chunk
            yield early
        return


def classify_error(exc: BaseException) -> ModelCallFailed:
    """Map an SDK, HTTP or LangChain exception to a clean ``ModelCallFailed``."""
    if isinstance(exc, ModelCallFailed):
        return exc
    status = _status_of(exc)
    if isinstance(exc, (openai.APITimeoutError, lc.ModelTimeoutError, TimeoutError, *_TIMEOUTS)):
        return ModelCallFailed(
            "The model provider did not answer in time.",
            type="model-timeout",
            status=504,
            retryable=True,
        )
    connection = (openai.APIConnectionError, lc.ModelConnectionError, ConnectionError)
    if isinstance(exc, (*connection, *_TRANSPORT)):
        return ModelCallFailed(
            "The connection to the model provider failed.", type="model-unreachable", retryable=True
        )
    if status == 429 or isinstance(exc, lc.ModelRateLimitError):
        return ModelCallFailed(
            "The model provider is rate limiting requests; try again shortly.",
            type="model-rate-limited",
            status=503,
            retryable=True,
            provider_status=status,
        )
    if (status is not None and (status >= 500 or status in (408, 409))) or isinstance(
        exc, lc.ModelAPIError
    ):
        return ModelCallFailed(
            f"The model provider failed (HTTP {status or 'error'}).",
            type="model-unavailable",
            retryable=True,
            provider_status=status,
        )
    if status in (401, 403) or isinstance(
        exc, lc.ModelAuthenticationError | lc.ModelPermissionDeniedError
    ):
        return ModelCallFailed(
            f"The model provider rejected the credentials (HTTP {status or 401}).",
            type="model-auth-failed",
            provider_status=status,
        )
    if isinstance(exc, lc.ContextOverflowError):
        return ModelCallFailed(
            "The prompt is longer than the model's context window.",
            type="model-context-overflow",
            provider_status=status,
        )
    if status == 404 or isinstance(exc, lc.ModelNotFoundError):
        return ModelCallFailed(
            f"The model provider does not know this model: {_provider_message(exc)}",
            type="model-not-found",
            provider_status=status,
        )
    if status is not None and 400 <= status < 500:
        return ModelCallFailed(
            f"The model provider rejected the request (HTTP {status}): {_provider_message(exc)}",
            type="model-rejected-request",
            provider_status=status,
        )
    if isinstance(exc, json.JSONDecodeError | openai.APIResponseValidationError):
        return ModelCallFailed(
            "The model provider sent a malformed response.", type="model-bad-response"
        )
    if isinstance(exc, openai.APIError):  # an error event inside the stream
        return ModelCallFailed(f"The model provider reported an error: {_provider_message(exc)}")
    return ModelCallFailed(f"The model call failed ({type(exc).__name__}).")


def _status_of(exc: BaseException) -> int | None:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code
    status = getattr(exc, "status_code", None)  # openai, anthropic and ollama all have it
    return status if isinstance(status, int) and 100 <= status < 600 else None


def _provider_message(exc: BaseException) -> str:
    """The provider's own message, without anything that looks like a key, kept short."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    text = str(message or getattr(exc, "message", None) or exc)
    text = _SECRETS.sub(lambda m: (m.group(1) or "") + "[redacted]", text)
    return text[:300]


def _retry_after(exc: BaseException) -> float | None:
    """The provider's ``retry-after-ms`` / ``retry-after`` (seconds) hint, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    return None

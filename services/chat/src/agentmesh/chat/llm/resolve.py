"""From an agent's model settings to a LangChain chat model.

Every remote model is built with ``max_retries=0``. Retries happen in
``agentmesh.chat.llm.streaming.stream_with_retry``, which knows whether tokens already
reached the user. A retry inside the SDK would not know that.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from typing import Any

from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel

from agentmesh.chat.llm.direct_client import DirectCompletions
from agentmesh.chat.llm.offline import OFFLINE_MODEL, OfflineChatModel
from agentmesh.chat.llm.streaming import ModelCallFailed

PROVIDER_KINDS = ("offline", "openai", "anthropic", "ollama")
# OpenAI-compatible servers (Ollama, vLLM, LM Studio) ignore the key, but the SDK needs one.
_UNUSED_KEY = "unused"


class ModelMisconfigured(ModelCallFailed):
    """The model settings cannot work (unknown provider kind, missing key)."""

    type, title = "model-misconfigured", "Model misconfigured"


def resolve_chat_model(
    *,
    provider_kind: str | None,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float = 60.0,
) -> BaseChatModel:
    """The chat model for these settings, built once and reused: a remote model owns an
    SDK client (its connection pool and TLS context), and building one per run added tens
    of milliseconds to every time to first token. Models are stateless between calls."""
    return _cached_model(provider_kind, model, base_url, api_key, temperature, max_tokens,
                         timeout)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _cached_model(
    provider_kind: str | None, model: str, base_url: str | None, api_key: str | None,
    temperature: float | None, max_tokens: int | None, timeout: float,
) -> BaseChatModel:  # fmt: skip
    return build_chat_model(
        provider_kind=provider_kind, model=model, base_url=base_url, api_key=api_key,
        temperature=temperature, max_tokens=max_tokens, timeout=timeout,
    )  # fmt: skip


def build_chat_model(
    *,
    provider_kind: str | None,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float = 60.0,
) -> BaseChatModel:
    """The chat model for a provider kind: offline (or None), openai, anthropic, ollama.

    ``timeout`` bounds each HTTP request. Streaming also has a per-chunk timeout of the same
    length, so a stream that stalls fails instead of hanging.
    """
    kind = (provider_kind or "offline").lower()
    if kind == "offline":
        return OfflineChatModel(model=model or OFFLINE_MODEL, max_tokens=max_tokens)
    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if kind == "openai":
        if not api_key and not base_url:
            raise ModelMisconfigured("The openai provider needs an API key.")
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        chat = init_chat_model(
            model,
            model_provider="openai",
            base_url=base_url,
            api_key=api_key or _UNUSED_KEY,
            max_retries=0,
            timeout=timeout,
            stream_usage=True,
            stream_chunk_timeout=timeout,
            **options,
        )
        chat.async_client = DirectCompletions(chat.async_client)  # no per-message transform
        return chat
    if kind == "anthropic":
        if not api_key:
            raise ModelMisconfigured("The anthropic provider needs an API key.")
        if base_url:
            options["base_url"] = base_url
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        return init_chat_model(
            model,
            model_provider="anthropic",
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            stream_usage=True,
            **options,
        )
    if kind == "ollama":
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        client_kwargs: dict[str, Any] = {"timeout": timeout}
        if api_key:  # Ollama behind a proxy that checks a bearer token
            client_kwargs["headers"] = {"Authorization": f"Bearer {api_key}"}
        return init_chat_model(
            model,
            model_provider="ollama",
            base_url=base_url,
            client_kwargs=client_kwargs,
            **options,
        )
    raise ModelMisconfigured(
        f"Unknown model provider kind {kind!r}; expected one of {PROVIDER_KINDS}."
    )


def tool_choice_for(provider: str, choice: str | dict[str, Any] | None) -> Any:
    """An OpenAI-form ``tool_choice`` in the form ``provider``'s LangChain model takes."""
    if choice is None or choice == "auto" or provider == "ollama":  # Ollama has none
        return None
    if provider != "anthropic":
        return choice
    if isinstance(choice, dict):  # {"type": "function", "function": {"name"}}: the name
        return (choice.get("function") or {}).get("name")
    return {"required": "any", "none": {"type": "none"}}.get(choice)


def warm_providers() -> None:
    """Import the provider SDKs and build one model, as the first run would.

    LangChain imports a provider's integration on first use: seconds of CPU on a busy
    machine, during which the replica's event loop would stand still (its other streams,
    its consumers, the heartbeats of its runs). Chat does it in a thread at start-up."""
    for module in ("langchain_openai", "langchain_anthropic", "langchain_ollama"):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        resolve_chat_model(provider_kind="openai", model="warm-up",
                           base_url="http://127.0.0.1:9/v1", api_key=_UNUSED_KEY)  # fmt: skip

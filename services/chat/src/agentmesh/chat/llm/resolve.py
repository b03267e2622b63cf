"""From an agent's model settings to a LangChain chat model.

Every remote model is built with ``max_retries=0``. Retries happen in
``agentmesh.chat.llm.streaming.stream_with_retry``, which knows whether tokens already
reached the user. A retry inside the SDK would not know that.

Every remote model's SDK gets its HTTP client from ``agentmesh.shared.outbound`` (guarded:
each request checks the provider's address against the operator's policy). Models are
cached (``MODELS``: bounded, expiring, as their key holds the decrypted API key); a model
dropped from the cache has its HTTP client closed once no run uses it.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any

from langchain.chat_models import init_chat_model
from langchain_core.language_models import BaseChatModel

from agentmesh.chat.llm.direct_client import DirectCompletions
from agentmesh.chat.llm.offline import OFFLINE_MODEL, OfflineChatModel
from agentmesh.chat.llm.streaming import ModelCallFailed
from agentmesh.shared import outbound
from agentmesh.shared.outbound import ClientCache, OutboundPolicy

PROVIDER_KINDS = ("offline", "openai", "anthropic", "ollama", "azure_openai", "mistral")
# OpenAI-compatible servers (Ollama, vLLM, LM Studio) ignore the key, but the SDK needs one.
_UNUSED_KEY = "unused"


class ModelMisconfigured(ModelCallFailed):
    """The model settings cannot work (unknown provider kind, missing key)."""

    type, title = "model-misconfigured", "Model misconfigured"


class ModelAddressNotAllowed(ModelCallFailed):
    """The provider's ``base_url`` reaches an address the platform refuses."""

    status, type, title = 422, "address-not-allowed", "Address not allowed"


async def check_provider_address(base_url: str | None, policy: OutboundPolicy) -> None:
    """Check a provider's ``base_url`` at use (the guard checks each request too; this
    gives the run a clear error before any call). A host that does not resolve is left to
    the call, which fails as ``model-unreachable``: DNS trouble is not a refused address."""
    if not base_url:
        return
    try:
        await outbound.check_field(base_url, policy, "base_url", unresolvable_ok=True)
    except outbound.AddressNotAllowed as exc:
        raise ModelAddressNotAllowed(
            f"The provider's {exc.detail}. An operator can allow it with "
            "AGENTMESH_ALLOWED_PRIVATE_HOSTS."
        ) from None


@dataclass(eq=False)
class _Built:
    """A model and the HTTP clients (or transports) it owns."""

    model: BaseChatModel
    clients: list[Any] = field(default_factory=list)

    async def aclose(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.aclose()


#: Built models: an SDK client (its connection pool and TLS context) per model, as
#: building one per run added tens of milliseconds to every time to first token.
MODELS: ClientCache[_Built] = ClientCache(maxsize=256, ttl=600, close=_Built.aclose)


def resolve_chat_model(
    *,
    provider_kind: str | None,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float = 60.0,
    policy: OutboundPolicy | None = None,
    api_version: str | None = None,
) -> BaseChatModel:
    """The chat model for these settings, from ``MODELS`` (held for the calling task: it
    is not closed while that task runs). Models are stateless between calls."""
    policy = policy or OutboundPolicy()
    key = (
        provider_kind,
        model,
        base_url,
        api_key,
        temperature,
        max_tokens,
        timeout,
        policy,
        api_version,
    )
    return MODELS.get(
        key,
        lambda: _build(
            provider_kind=provider_kind,
            model=model,
            base_url=base_url,
            api_key=api_key,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout=timeout,
            policy=policy,
            api_version=api_version,
        ),
    ).model


def build_chat_model(
    *,
    provider_kind: str | None,
    model: str,
    base_url: str | None = None,
    api_key: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    timeout: float = 60.0,
    policy: OutboundPolicy | None = None,
    api_version: str | None = None,
) -> BaseChatModel:
    """The chat model for a provider kind: offline (or None), openai, anthropic, ollama,
    azure_openai (``model`` is the deployment, ``api_version`` the API's), mistral.

    ``timeout`` bounds each HTTP request. Streaming also has a per-chunk timeout of the same
    length, so a stream that stalls fails instead of hanging. The caller owns the model's
    HTTP client (``resolve_chat_model`` closes it when the cache drops the model).
    """
    return _build(
        provider_kind=provider_kind,
        model=model,
        base_url=base_url,
        api_key=api_key,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        policy=policy or OutboundPolicy(),
        api_version=api_version,
    ).model


def _build(
    *,
    provider_kind: str | None,
    model: str,
    base_url: str | None,
    api_key: str | None,
    temperature: float | None,
    max_tokens: int | None,
    timeout: float,
    policy: OutboundPolicy,
    api_version: str | None = None,
) -> _Built:
    kind = (provider_kind or "offline").lower()
    if kind == "offline":
        return _Built(OfflineChatModel(model=model or OFFLINE_MODEL, max_tokens=max_tokens))
    options: dict[str, Any] = {}
    if temperature is not None:
        options["temperature"] = temperature
    if kind == "openai":
        if not api_key and not base_url:
            raise ModelMisconfigured("The openai provider needs an API key.")
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        http = outbound.async_client2(policy, keepalive=True)
        chat = init_chat_model(
            model,
            model_provider="openai",
            base_url=base_url,
            api_key=api_key or _UNUSED_KEY,
            max_retries=0,
            timeout=timeout,
            stream_usage=True,
            stream_chunk_timeout=timeout,
            http_async_client=http,
            http_client=outbound.refusing_sync_client2(),
            **options,
        )
        chat.async_client = DirectCompletions(chat.async_client)  # no per-message transform
        return _Built(chat, [http])
    if kind == "anthropic":
        if not api_key:
            raise ModelMisconfigured("The anthropic provider needs an API key.")
        if base_url:
            options["base_url"] = base_url
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        chat = init_chat_model(
            model,
            model_provider="anthropic",
            api_key=api_key,
            max_retries=0,
            timeout=timeout,
            stream_usage=True,
            **options,
        )
        return _with_anthropic_clients(chat, policy)
    if kind == "ollama":
        if max_tokens is not None:
            options["num_predict"] = max_tokens
        client_kwargs: dict[str, Any] = {"timeout": timeout, "trust_env": False}
        if api_key:  # Ollama behind a proxy that checks a bearer token
            client_kwargs["headers"] = {"Authorization": f"Bearer {api_key}"}
        transport = outbound.GuardedTransport(policy, keepalive=True)
        chat = init_chat_model(
            model,
            model_provider="ollama",
            base_url=base_url,
            client_kwargs=client_kwargs,
            async_client_kwargs={"transport": transport},
            sync_client_kwargs={"transport": outbound.RefusingTransport()},
            **options,
        )
        return _Built(chat, [transport])
    if kind == "azure_openai":
        return _azure(model, base_url, api_key, api_version, timeout, policy, max_tokens, options)
    if kind == "mistral":
        return _mistral(model, base_url, api_key, timeout, policy, max_tokens, options)
    raise ModelMisconfigured(
        f"Unknown model provider kind {kind!r}; expected one of {PROVIDER_KINDS}."
    )


def _with_anthropic_clients(chat: Any, policy: OutboundPolicy) -> _Built:
    """ChatAnthropic takes no HTTP client: give its (lazily built) SDK clients ours."""
    import anthropic

    params = chat._client_params
    http = outbound.async_client2(policy, keepalive=True)
    chat.__dict__["_async_client"] = anthropic.AsyncClient(**params, http_client=http)
    chat.__dict__["_client"] = anthropic.Client(
        **params, http_client=outbound.refusing_sync_client2()
    )
    return _Built(chat, [http])


def _azure(
    model: str,
    base_url: str | None,
    api_key: str | None,
    api_version: str | None,
    timeout: float,
    policy: OutboundPolicy,
    max_tokens: int | None,
    options: dict[str, Any],
) -> _Built:
    """Azure OpenAI: ``base_url`` is the resource, ``model`` the deployment; the SDK
    posts to ``/openai/deployments/{model}/chat/completions?api-version=`` with the key in
    the ``api-key`` header."""
    from langchain_openai import AzureChatOpenAI

    if not (api_key and base_url and api_version):
        raise ModelMisconfigured(
            "The azure_openai provider needs a base_url, an api_version and an API key."
        )
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    http = outbound.async_client2(policy, keepalive=True)
    chat = AzureChatOpenAI(
        azure_endpoint=base_url,
        azure_deployment=model,
        model=model,
        api_version=api_version,
        api_key=api_key,
        max_retries=0,
        timeout=timeout,
        stream_usage=True,
        stream_chunk_timeout=timeout,
        http_async_client=http,
        http_client=outbound.refusing_sync_client2(),
        **options,
    )
    return _Built(chat, [http])


def _mistral(
    model: str,
    base_url: str | None,
    api_key: str | None,
    timeout: float,
    policy: OutboundPolicy,
    max_tokens: int | None,
    options: dict[str, Any],
) -> _Built:
    """Mistral's own API through langchain-mistralai, which takes its httpx clients as
    fields: the guarded one, and a sync one that refuses."""
    from langchain_mistralai import ChatMistralAI

    if not api_key:
        raise ModelMisconfigured("The mistral provider needs an API key.")
    url = (base_url or "https://api.mistral.ai/v1").rstrip("/")
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {api_key}",
    }
    http = outbound.async_client(
        policy, keepalive=True, base_url=url, headers=headers, timeout=timeout
    )
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if "temperature" in options:  # Mistral takes 0..1
        options["temperature"] = min(float(options["temperature"]), 1.0)
    chat = ChatMistralAI(
        model=model,
        api_key=api_key,
        base_url=url,
        max_retries=0,
        timeout=int(timeout),
        async_client=http,
        client=outbound.refusing_sync_client(),
        **options,
    )
    return _Built(chat, [http])


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
    for module in (
        "langchain_openai",
        "langchain_anthropic",
        "langchain_ollama",
        "langchain_mistralai",
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    with contextlib.suppress(Exception):  # not cached: never used, nothing to close
        build_chat_model(
            provider_kind="openai",
            model="warm-up",
            base_url="http://127.0.0.1:9/v1",
            api_key=_UNUSED_KEY,
        )

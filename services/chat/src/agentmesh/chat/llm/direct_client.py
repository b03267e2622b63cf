"""``chat.completions.create`` without the openai SDK's request transform.

Before every call the SDK walks the request through its TypedDict annotations
(``openai._utils._transform``), trying each message against every member of the message
union. For chat completions that walk changes nothing: no chat parameter has an alias or
a format (``PropertyInfo``), and LangChain's payload is already plain JSON (dicts, lists,
strings, numbers). But it costs about 0.1 ms of CPU per message, on the event loop,
before the request leaves: a 100-message conversation waited 10 ms or more for its first
token (measured with ``bench/chat.py`` and py-spy). This client posts the payload as it
is, through the SDK's own ``_post``, so auth, retries, timeouts, errors and the SSE
stream parsing all stay the SDK's. Runs stream; LangChain's non-streamed calls (titles,
summaries) go through ``with_raw_response``, which is the SDK's own path unchanged.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncStream, NotGiven, Omit
from openai._base_client import make_request_options
from openai.types.chat import ChatCompletion, ChatCompletionChunk

#: ``create`` keywords that are request options, not body fields.
_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")


class DirectCompletions:
    """Stands in for ``AsyncOpenAI().chat.completions`` in a LangChain ``ChatOpenAI``."""

    def __init__(self, completions: Any) -> None:
        self._completions = completions

    def __getattr__(self, name: str) -> Any:  # with_raw_response, retrieve, ...
        return getattr(self._completions, name)

    async def create(self, **params: Any) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        options = {key: params.pop(key) for key in _OPTIONS if key in params}
        if "response_format" in params:  # the SDK checks it; LangChain never sends it here
            return await self._completions.create(**params, **options)
        # What the transform would drop: the SDK's "not given" markers.
        body = {
            key: value for key, value in params.items() if not isinstance(value, NotGiven | Omit)
        }
        stream = bool(body.get("stream"))
        return await self._completions._post(
            "/chat/completions",
            body=body,
            options=make_request_options(**options, security={"bearer_auth": True}),
            cast_to=ChatCompletion,
            stream=stream,
            stream_cls=AsyncStream[ChatCompletionChunk],
        )

"""``POST /v1/responses``: the request body, as OpenAI's Responses API defines it.

Every parameter OpenAI defines is accepted; one it does not define is a 400 naming it
(``extra="forbid"``: the 422 becomes OpenAI's 400 with ``param``). A parameter we define
but cannot honour is accepted at its neutral value and refused (400 naming it) at any
other: ``unsupported`` says which.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.chat.openai_compat.service import InvalidRequest

#: ``include`` values we honour: results of knowledge search, and (vacuously: we produce
#: no reasoning items) encrypted reasoning, which the Agents SDK asks for with store=false.
INCLUDABLE = {"file_search_call.results", "reasoning.encrypted_content"}
TOOL_CHOICES = ("none", "auto", "required")


class ResponseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: An agent: its id, or the slug ``GET /v1/models`` lists.
    model: str = Field(min_length=1, max_length=200)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = Field(default=None, max_length=256_000)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    store: bool | None = None
    background: bool | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=128)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    truncation: Literal["auto", "disabled"] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=512)
    safety_identifier: str | None = Field(default=None, max_length=512)
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str | None = None
    prompt: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    context_management: list[dict[str, Any]] | None = None
    moderation: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    background_options: dict[str, Any] | None = None

    @property
    def stored(self) -> bool:
        return self.store is not False


def _refuse(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(why, extra={"param": param})


def check_metadata(metadata: dict[str, str] | None, param: str = "metadata") -> None:
    """OpenAI's bounds: at most 16 pairs, keys up to 64 characters, values up to 512."""
    if not metadata:
        return
    if len(metadata) > 16:
        raise _refuse(param, "metadata may hold at most 16 key-value pairs.")
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise _refuse(
                f"{param}.{key}", "metadata keys are at most 64 characters, values at most 512."
            )


def _neutral(body: ResponseRequest) -> None:
    """Parameters with nothing behind them here: only their neutral value passes."""
    empty = (
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "context_management",
        "moderation",
        "access_programs",
        "image",
        "background_options",
        "max_tool_calls",
    )
    for name in empty:
        if getattr(body, name) not in (None, {}, []):
            raise _refuse(name, f"{name} is not supported by this server.")
    if body.prompt_cache_retention not in (None, "in_memory"):
        raise _refuse("prompt_cache_retention", "Only in_memory prompt caching is offered.")
    if body.top_logprobs not in (None, 0):
        raise _refuse("top_logprobs", "Log probabilities are not available.")
    if body.top_p not in (None, 1):
        raise _refuse("top_p", "top_p other than 1 is not supported by this server.")
    if body.service_tier not in (None, "auto", "default"):
        raise _refuse("service_tier", "Only the default service tier is offered.")
    for key, value in (body.reasoning or {}).items():
        if value is not None:
            raise _refuse(f"reasoning.{key}", "The agents' models take no reasoning options.")
    for index, name in enumerate(body.include or []):
        if name not in INCLUDABLE:
            raise _refuse(f"include[{index}]", f"include {name!r} is not supported.")
    if body.background and body.store is False:
        raise _refuse("background", "A background response must be stored (store: true).")
    if body.parallel_tool_calls is False:
        raise _refuse("parallel_tool_calls", "parallel_tool_calls: false is not supported.")
    options = body.stream_options or {}
    if set(options) - {"include_obfuscation"}:
        raise _refuse("stream_options", "stream_options takes include_obfuscation only.")
    if options.get("include_obfuscation"):
        raise _refuse("stream_options.include_obfuscation", "Stream obfuscation is not offered.")


def _text(body: ResponseRequest) -> None:
    text = body.text or {}
    for key in set(text) - {"format", "verbosity"}:
        raise _refuse(f"text.{key}", f"text.{key} is not a parameter.")
    if text.get("verbosity") not in (None, "medium"):
        raise _refuse("text.verbosity", "Only medium verbosity is offered.")
    form = text.get("format") or {"type": "text"}
    kind = form.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise _refuse(
            "text.format.type",
            f"text.format {kind!r} is not one of text, json_object, json_schema.",
        )
    if kind == "json_schema":
        if not isinstance(form.get("name"), str) or not form["name"]:
            raise _refuse("text.format.name", "A json_schema format needs a name.")
        if not isinstance(form.get("schema"), dict):
            raise _refuse("text.format.schema", "A json_schema format needs a schema object.")


def response_format(body: ResponseRequest) -> dict[str, Any] | None:
    """``text.format`` as the Chat Completions ``response_format`` a run's model takes."""
    form = (body.text or {}).get("format") or {"type": "text"}
    if form["type"] == "json_object":
        return {"type": "json_object"}
    if form["type"] == "json_schema":
        spec = {
            key: form[key]
            for key in ("name", "schema", "strict", "description")
            if form.get(key) is not None
        }
        return {"type": "json_schema", "json_schema": spec}
    return None


def _tools(body: ResponseRequest) -> None:
    names = set()
    for index, tool in enumerate(body.tools or []):
        if tool.get("type") != "function":
            raise _refuse(
                f"tools[{index}].type",
                f"Tool type {tool.get('type')!r} is not "
                "supported: only function tools (the agent's own tools run on the "
                "server).",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name or len(name) > 64:
            raise _refuse(f"tools[{index}].name", "A function tool needs a name (1-64 chars).")
        extra = set(tool) - {"type", "name", "description", "parameters", "strict"}
        if extra:
            raise _refuse(f"tools[{index}].{sorted(extra)[0]}", "Unknown function tool field.")
        names.add(name)
    choice = body.tool_choice
    if choice is None or choice in TOOL_CHOICES:
        if choice == "required" and not names:
            raise _refuse("tool_choice", "tool_choice 'required' needs tools.")
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        if choice.get("name") not in names:
            raise _refuse("tool_choice.name", "tool_choice names a function not in tools.")
        return
    raise _refuse("tool_choice", "tool_choice takes none, auto, required or a function.")


def validate(body: ResponseRequest) -> None:
    """400 (naming the parameter) for what is defined but not honoured here."""
    _neutral(body)
    _text(body)
    _tools(body)
    check_metadata(body.metadata)
    if body.conversation is not None and body.previous_response_id is not None:
        raise _refuse(
            "conversation", "conversation and previous_response_id cannot be used together."
        )
    if isinstance(body.conversation, dict) and not isinstance(body.conversation.get("id"), str):
        raise _refuse("conversation.id", 'conversation is an id or {"id": ...}.')


def conversation_ref(body: ResponseRequest) -> str | None:
    if isinstance(body.conversation, dict):
        return body.conversation["id"]
    return body.conversation


def client_tools(body: ResponseRequest) -> list[dict[str, Any]] | None:
    """The request's function tools in Chat Completions form (what a run binds)."""
    if not body.tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                key: tool[key]
                for key in ("name", "description", "parameters", "strict")
                if tool.get(key) is not None
            },
        }
        for tool in body.tools
    ]


def tool_choice(body: ResponseRequest) -> str | dict[str, Any] | None:
    choice = body.tool_choice
    if isinstance(choice, dict):
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def echoed(body: ResponseRequest, config: dict[str, Any]) -> dict[str, Any]:
    """The request's parameters as a response echoes them (OpenAI's defaults filled in)."""
    temperature = body.temperature if body.temperature is not None else config.get("temperature")
    return {
        "instructions": body.instructions,
        "metadata": body.metadata or {},
        "temperature": 1.0 if temperature is None else temperature,
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "max_output_tokens": body.max_output_tokens,
        "tools": body.tools or [],
        "tool_choice": body.tool_choice or "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "text": {
            "format": (body.text or {}).get("format") or {"type": "text"},
            "verbosity": "medium",
        },
        "truncation": body.truncation or "disabled",
        "user": body.user,
        "safety_identifier": body.safety_identifier,
        "store": body.stored,
        "background": bool(body.background),
    }

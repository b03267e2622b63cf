"""The subset of OpenAI's Chat Completions schema that ``/v1`` accepts and returns.

Requests ignore fields they don't know, as OpenAI-compatible servers commonly do, so
clients that send newer options keep working.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class FunctionCall(_Lenient):
    name: str = Field(min_length=1, max_length=64)
    #: JSON-encoded arguments, as OpenAI sends them.
    arguments: str = "{}"


class ToolCall(_Lenient):
    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionSpec(_Lenient):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(_Lenient):
    name: str = Field(min_length=1, max_length=64)


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class OtherToolChoice(_Lenient):
    type: Literal["allowed_tools", "custom"]


class JsonSchemaSpec(_Lenient):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    #: A JSON Schema (its root an object for the strictest providers).
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormatText(_Lenient):
    type: Literal["text"]


class ResponseFormatJsonObject(_Lenient):
    type: Literal["json_object"]


class ResponseFormatJsonSchema(_Lenient):
    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema,
    Field(discriminator="type"),
]


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    #: An agent: its id, or the slug ``GET /v1/models`` lists.
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    #: Any value in 0..2 is allowed, whatever temperature the agent sets.
    temperature: float | None = Field(default=None, ge=0, le=2)
    tools: list[Tool] | None = Field(default=None, max_length=128)
    #: ``none``, ``auto``, ``required``, or ``{"type": "function", "function": {"name"}}``
    #: naming one of ``tools``; passed to the model with the tools. Other forms OpenAI has
    #: (``allowed_tools``, ``custom``) are accepted and left to the model (``auto``).
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | OtherToolChoice | None = (
        None
    )
    #: ``{"type": "json_object"}`` or ``{"type": "json_schema", "json_schema": {name,
    #: schema, strict?}}``: the answer is a JSON document (of the schema). It reaches the
    #: provider in its own form (OpenAI, Azure, Mistral as is; Anthropic as a forced tool;
    #: Ollama as ``format``); the offline model answers a minimal document of the schema.
    response_format: ResponseFormat | None = None
    n: int = 1

    @model_validator(mode="after")
    def _choice_names_a_tool(self) -> ChatCompletionRequest:
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {tool.function.name for tool in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError("tool_choice names a function that is not in tools")
        return self

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def response_format_dict(self) -> dict[str, Any] | None:
        """``response_format`` as the run's model takes it (None for plain text)."""
        if self.response_format is None or self.response_format.type == "text":
            return None
        return self.response_format.model_dump(by_alias=True, exclude_none=True)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "agentmesh"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[dict[str, Any]] | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class ServedBy(BaseModel):
    """Which model of the agent answered (an AgentMesh field: ``model`` names the agent)."""

    model: str
    provider: str
    fallback_index: int | None = Field(
        default=None, description="Null: the agent's own model; else its fallback's position"
    )


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: None = None
    served_by: ServedBy | None = None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody

"""Per-agent configs of the built-in tools, with their bounds.

One source for three uses, so they cannot drift: the tools catalog publishes each model's
JSON schema (``GET /api/v1/tools``), the agents service validates an agent's tool configs
against them on create, update and restore (a 422 naming ``tools[i].config.<field>``), and
the tools read their config through ``for_run``, which pulls a stored config (one saved
before these bounds, say) into them instead of trusting it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

C = TypeVar("C", bound="ToolConfig")

#: An ``allowed_hosts`` entry: a host name or IP address, or ``*.domain`` for its subdomains.
HostPattern = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[^\s/@?#\\]+$")
]


class ToolConfig(BaseModel):
    """Base of every built-in tool's config: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def for_run(cls: type[C], raw: Any) -> C:
        """``raw`` as the tool will use it: a config without fields has nothing to clamp."""
        return cls()


class NoConfig(ToolConfig):
    """The tool takes no per-agent config."""


class HttpRequestConfig(ToolConfig):
    allowed_hosts: list[HostPattern] = Field(
        max_length=50,
        description="Hosts the tool may call: exact names, or '*.example.com' for subdomains",
    )
    timeout_seconds: float = Field(
        default=10, ge=0.1, le=60, description="For the whole exchange, redirects included"
    )
    max_response_bytes: int = Field(
        default=100_000, ge=1, le=5_000_000, description="The body is cut after this many bytes"
    )

    @classmethod
    def for_run(cls, raw: Any) -> HttpRequestConfig:
        """The config clamped into the bounds: out-of-range numbers to the nearest bound,
        unusable ones to the default, the host list cut to its maximum (bad entries
        dropped), unknown keys ignored. Never raises."""
        raw = raw if isinstance(raw, dict) else {}
        hosts = raw.get("allowed_hosts")
        usable = [h for h in hosts if _valid_host(h)] if isinstance(hosts, list) else []
        return cls(
            allowed_hosts=usable[: _bounds(cls, "allowed_hosts")[1]],
            timeout_seconds=_clamped_number(cls, "timeout_seconds", raw, float),
            max_response_bytes=int(_clamped_number(cls, "max_response_bytes", raw, int)),
        )


#: The config model of each built-in tool, by tool id.
TOOL_CONFIGS: dict[str, type[ToolConfig]] = {
    "calculator": NoConfig,
    "current_time": NoConfig,
    "knowledge_search": NoConfig,
    "http_request": HttpRequestConfig,
}


def config_schema(tool_id: str) -> dict[str, Any]:
    """The JSON schema the catalog publishes for a built-in tool's ``config``."""
    schema = TOOL_CONFIGS[tool_id].model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    return schema


_HOST = TypeAdapter(HostPattern, config=ConfigDict(strict=True))


def _valid_host(value: Any) -> bool:
    try:
        _HOST.validate_python(value)
    except ValidationError:
        return False
    return True


def _bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    low = high = None
    for constraint in model.model_fields[name].metadata:
        if isinstance(constraint, annotated_types.Ge):
            low = constraint.ge
        elif isinstance(constraint, annotated_types.Le):
            high = constraint.le
        elif isinstance(constraint, annotated_types.MaxLen):
            high = constraint.max_length
    return low, high


def _clamped_number(model: type[BaseModel], name: str, raw: dict[str, Any], kind: type) -> Any:
    default = model.model_fields[name].default
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        value = default
    try:
        number = float(value)
    except ValueError:
        number = float(default)
    if not math.isfinite(number):
        number = float(default)
    low, high = _bounds(model, name)
    number = min(max(number, low), high)
    return int(number) if kind is int else number

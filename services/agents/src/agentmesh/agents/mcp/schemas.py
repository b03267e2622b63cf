from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    UrlConstraints,
    field_validator,
)

from agentmesh.shared.fields import NotNull
from agentmesh.shared.pagination import Page

McpUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000)]
HeaderName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"),
]
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=128)]

#: Headers the MCP transport sets itself; letting users set them would break or spoof it.
RESERVED_HEADERS = frozenset(
    {
        "accept",
        "connection",
        "content-length",
        "content-type",
        "host",
        "last-event-id",
        "mcp-protocol-version",
        "mcp-session-id",
        "transfer-encoding",
    }
)
_HEADER_VALUE = re.compile(r"^[\x20-\x7e\t]*$")


def _no_userinfo(url: AnyHttpUrl | None) -> AnyHttpUrl | None:
    if url is not None and (url.username or url.password):
        raise ValueError("put credentials in the auth header, not in the URL")
    return url


def _allowed_header(name: str | None) -> str | None:
    if name is not None and name.lower() in RESERVED_HEADERS:
        raise ValueError(f"{name} is set by the MCP transport itself")
    return name


def _valid_header_value(value: SecretStr | None) -> SecretStr | None:
    if value is not None and not _HEADER_VALUE.match(value.get_secret_value()):
        raise ValueError("a header value must be printable ASCII on one line")
    return value


class McpServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Docs search"])
    url: McpUrl = Field(
        description="The server's streamable HTTP endpoint",
        examples=["https://mcp.example.com/mcp"],
    )
    auth_header_name: HeaderName = Field(
        default="Authorization", description="Sent with auth_header_value, if any"
    )
    auth_header_value: SecretStr | None = Field(
        default=None,
        max_length=4000,
        description="Encrypted at rest and never shown again, e.g. 'Bearer <token>'",
    )

    _url = field_validator("url")(_no_userinfo)
    _name = field_validator("auth_header_name")(_allowed_header)
    _value = field_validator("auth_header_value")(_valid_header_value)


class McpServerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = NotNull(min_length=1, max_length=200)
    url: McpUrl = NotNull()
    auth_header_name: HeaderName = NotNull()
    auth_header_value: SecretStr | None = Field(
        default=None, max_length=4000, description="``null`` removes the auth header"
    )

    _url = field_validator("url")(_no_userinfo)
    _name = field_validator("auth_header_name")(_allowed_header)
    _value = field_validator("auth_header_value")(_valid_header_value)


class McpServerOut(BaseModel):
    id: uuid.UUID
    owner_id: uuid.UUID = Field(description="Who created it")
    workspace_id: uuid.UUID
    name: str
    url: str
    auth_header_name: str | None = Field(description="Only the header's name is ever shown")
    has_auth: bool
    auth_header_value_last4: str | None = Field(
        description="The value's last 4 characters, shown only for values of 12 or more, "
        "and only to the workspace's admins and owners"
    )
    created_at: datetime
    updated_at: datetime


class McpToolOut(BaseModel):
    name: str
    description: str | None
    input_schema: dict[str, Any] = Field(description="JSON Schema of the tool's arguments")


class McpToolsConfig(BaseModel):
    """``config`` of an agent's ``{"id": "mcp"}`` tool: which tools of which server."""

    model_config = ConfigDict(extra="forbid")

    server_id: uuid.UUID
    tools: list[ToolName] = Field(min_length=1, max_length=100)


class McpServerPage(Page[McpServerOut]):
    pass

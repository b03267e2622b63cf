"""Request-body field helpers shared by every service's schemas."""

from __future__ import annotations

from typing import Any

from pydantic import Field


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def NotNull(**constraints: Any) -> Any:
    """A PATCH field that may be left out (kept as is) but may not be ``null``.

    Annotate it with the plain type (``name: str = NotNull(max_length=200)``): left out,
    it is unset (``model_dump(exclude_unset=True)`` skips it); sent as ``null``, it is a
    422 naming the field. Its JSON schema shows no ``default: null``, so the published
    document says what is accepted.
    """
    return Field(None, json_schema_extra=_no_default, **constraints)

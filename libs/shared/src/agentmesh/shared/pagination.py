"""One cursor pagination for every list endpoint: ``?limit=&cursor=`` in,
``{"items": [...], "next_cursor": ...}`` out.

Keyset pagination over an ordered, unique tuple of columns (e.g. ``created_at, id``): the
cursor is the last row's values of those columns, opaque to clients (URL-safe base64 of a
JSON list). A cursor this API did not give out is a 400 ``invalid-cursor``, never a 500.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field
from sqlalchemy import Select, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from agentmesh.shared.errors import AppError

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_BIGINT = (-(2**63), 2**63 - 1)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")]
Cursor = Annotated[
    str | None, Query(max_length=500, description="The `next_cursor` of the previous page")
]
#: ``responses=`` for a paginated route: the documented 400 of a bad cursor.
CURSOR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "A cursor this API did not give out (`invalid-cursor`)"}
}


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page"
    )


class InvalidCursor(AppError):
    status, type, title = 400, "invalid-cursor", "Invalid cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not one this API gave out.")


def _dump(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _load(value: Any, python_type: type) -> Any:
    if python_type is datetime:
        if not isinstance(value, str):
            raise TypeError("not a timestamp")
        loaded = datetime.fromisoformat(value)
        if loaded.tzinfo is None:
            raise ValueError("a cursor timestamp carries its time zone")
        return loaded
    if python_type is uuid.UUID:
        return uuid.UUID(str(value))
    if python_type is int:
        if type(value) is not int or not _BIGINT[0] <= value <= _BIGINT[1]:
            raise ValueError("not an integer in range")
        return value
    if python_type is str and isinstance(value, str):
        return value
    raise TypeError(f"no cursor values of type {python_type.__name__}")


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps([_dump(value) for value in values]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, columns: Sequence[InstrumentedAttribute[Any]]) -> list[Any]:
    """The values ``encode_cursor`` was given, typed as ``columns``; ``InvalidCursor`` else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, list) or len(values) != len(columns):
            raise ValueError("wrong shape")
        return [
            _load(value, column.type.python_type)
            for value, column in zip(values, columns, strict=True)
        ]
    except (ValueError, TypeError, NotImplementedError) as exc:  # binascii.Error is a ValueError
        raise InvalidCursor() from exc


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    columns: Sequence[InstrumentedAttribute[Any]],
    *,
    limit: int,
    cursor: str | None,
    descending: bool = False,
    rows: bool = False,
) -> tuple[list[Any], str | None]:
    """One page of ``query``'s entities ordered by ``columns`` (unique together, e.g.
    ``(Model.created_at, Model.id)``), after ``cursor``; returns them and the next cursor.
    With ``rows`` the page holds the query's rows (a Core select of several columns, the
    ``columns`` among them under their own names) instead of its first column's values."""
    key = tuple_(*columns)
    if cursor:
        values = decode_cursor(cursor, columns)
        last = tuple_(*(literal(v, c.type) for v, c in zip(values, columns, strict=True)))
        query = query.where(key < last if descending else key > last)
    order = [column.desc() if descending else column.asc() for column in columns]
    statement = query.order_by(*order).limit(limit + 1)
    found = list(
        (await session.execute(statement)).all() if rows else await session.scalars(statement)
    )
    page = found[:limit]
    if len(found) <= limit:
        return page, None
    return page, encode_cursor([getattr(page[-1], column.key) for column in columns])

"""Shared shaping for the control surface: paging, patches with nulls, and wire views of stored items."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from isthmus.errors import ApiError
from isthmus.wire import jsonable

T = TypeVar("T")
DEFAULT_WORKSPACE = str(uuid.uuid5(uuid.NAMESPACE_URL, "isthmus:workspace:default"))


def paging(query: Mapping[str, str], *, default_limit: int = 100) -> tuple[int, int]:
    """skip >= 0 and 1 <= limit <= 1000, else 422 naming the parameter."""
    out = []
    for name, default, lo, hi in (("skip", 0, 0, None), ("limit", default_limit, 1, 1000)):
        raw = query.get(name)
        try:
            value = default if raw in (None, "") else int(str(raw))
        except ValueError:
            raise ApiError(422, f"{name}: must be an integer") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise ApiError(422, f"{name}: must be {bound}, got {value}")
        out.append(value)
    return out[0], out[1]


def page(items: Sequence[T], skip: int, limit: int) -> list[T]:
    return list(items[skip:skip + limit])


def patch_fields(body: BaseModel) -> dict[str, Any]:
    """Fields the caller set to a value (explicit nulls from the otari client mean 'leave as is')."""
    return {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}


def money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def wire(data: Mapping[str, Any]) -> dict[str, Any]:
    return dict(jsonable(dict(data)))

"""Plain values for the wire: what a store hands back (``Decimal``, sets) as JSON-ready Python."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any


def jsonable(value: Any) -> Any:
    """Decimal -> int when integral else float (the otari client parses JSON numbers); sets -> lists."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return value

"""Python values <-> DynamoDB attribute values (``{"S": ...}``, ``{"N": ...}``, ...), as boto3's
``TypeSerializer`` / ``TypeDeserializer`` do it, without importing boto3.

Why not boto3's: ``boto3.dynamodb.types`` runs ``boto3/__init__`` first, which imports s3transfer and
multiprocessing (~75 M instructions, ~25 ms of a cold start on this machine) for nothing we use; the low-level
client comes from botocore (isthmus.adapters.aws). tests/unit/test_ddb_values.py checks this module against
boto3's on the same values.

Numbers go through DynamoDB's own decimal context (38 digits, exponent -128..126): a value it cannot hold
exactly is refused here, not rounded by the store. Floats are refused (callers turn them into Decimal first,
see ``ddb_items.exact``). Binary values come back as ``bytes`` (boto3 wraps them in its ``Binary``).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from decimal import Clamped, Context, Decimal, Inexact, Overflow, Rounded, Underflow
from typing import Any

DYNAMODB_CONTEXT = Context(Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow])
_BINARY = (bytes, bytearray)


_EXACT_INT = 10**38  # an int below this in magnitude is exact in DynamoDB's 38 digits: its str is its value


def number(value: int | Decimal) -> str:
    """An int or Decimal as DynamoDB's N string (refused when DynamoDB could not hold it exactly)."""
    if type(value) is int and -_EXACT_INT < value < _EXACT_INT:
        return str(value)
    number = DYNAMODB_CONTEXT.create_decimal(value)
    if not number.is_finite():
        raise TypeError(f"Infinity and NaN are not supported in DynamoDB: {value!r}")
    return str(number)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    return isinstance(value, int | Decimal)


def serialize(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, _BINARY):
        return {"B": bytes(value)}
    if isinstance(value, Set):
        if all(_is_number(v) for v in value):
            return {"NS": [number(v) for v in value]}
        if all(isinstance(v, str) for v in value):
            return {"SS": list(value)}
        if all(isinstance(v, _BINARY) for v in value):
            return {"BS": [bytes(v) for v in value]}
        raise TypeError(f"A set must hold only numbers, only strings or only binary values: {value!r}")
    if isinstance(value, Mapping):
        return {"M": {k: serialize(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [serialize(v) for v in value]}
    raise TypeError(f"Unsupported type {type(value).__name__} for DynamoDB: {value!r}")


def deserialize(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value as a Python value (numbers as Decimal, sets as set)."""
    if len(value) != 1:
        raise TypeError(f"An attribute value has exactly one type key: {dict(value)!r}")
    (kind, data), = value.items()
    if kind == "NULL":
        return None
    if kind in {"S", "BOOL"}:
        return data
    if kind == "N":
        return DYNAMODB_CONTEXT.create_decimal(data)
    if kind == "B":
        return bytes(data)
    if kind == "M":
        return {k: deserialize(v) for k, v in data.items()}
    if kind == "L":
        return [deserialize(v) for v in data]
    if kind == "SS":
        return set(data)
    if kind == "NS":
        return {DYNAMODB_CONTEXT.create_decimal(v) for v in data}
    if kind == "BS":
        return {bytes(v) for v in data}
    raise TypeError(f"Unknown DynamoDB attribute type {kind!r}")

"""Plain-Python <-> DynamoDB attribute values (store errors become ApiError 503 in isthmus.errors.store_failure).

Numbers come back as ``Decimal`` (money stays exact); floats going in (JSON metadata) become Decimal too.
The attribute-value codec is isthmus.adapters.ddb_values (boto3's rules, without importing boto3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from isthmus.adapters.ddb_values import deserialize, number, serialize
from isthmus.wire import jsonable


def exact(value: Any) -> Any:
    """Floats anywhere inside ``value`` become Decimal (DynamoDB refuses floats)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {str(k): exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [exact(v) for v in value]
    return value


def to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    """A dict of Python values as a DynamoDB item (None values are left out: absent, not NULL). Strings, booleans
    and numbers, all of a usage row, skip the general walk (each settlement batch converts up to 100 rows)."""
    item: dict[str, Any] = {}
    for k, v in data.items():
        kind = type(v)
        if kind is str:
            item[k] = {"S": v}
        elif kind is bool:
            item[k] = {"BOOL": v}
        elif kind is int or kind is Decimal:
            item[k] = {"N": number(v)}
        elif v is not None:
            item[k] = serialize(exact(v))
    return item


def to_value(value: Any) -> dict[str, Any]:
    return serialize(exact(value))


def values(data: Mapping[str, Any]) -> dict[str, Any]:
    """ExpressionAttributeValues from ``{":name": python value}``."""
    return {k: to_value(v) for k, v in data.items()}


def from_item(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {k: deserialize(v) for k, v in item.items()}


def is_conditional_failure(exc: BaseException) -> bool:
    code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
    return code == "ConditionalCheckFailedException"


def cancellation_codes(exc: BaseException) -> list[str]:
    """The per-item reasons of a TransactionCanceledException ("None" for items that were fine)."""
    reasons = (getattr(exc, "response", None) or {}).get("CancellationReasons", []) or []
    return [str(r.get("Code", "None")) for r in reasons]


def _all_pages(client: Any, operation: str, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(TableName=table, **kwargs):
        for item in page.get("Items", []):
            decoded = from_item(item)
            assert decoded is not None
            yield decoded


def scan_all(client: Any, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    return _all_pages(client, "scan", table, **kwargs)


def query_all(client: Any, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    return _all_pages(client, "query", table, **kwargs)


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), sort_keys=True)

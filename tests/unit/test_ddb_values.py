"""The DynamoDB attribute-value codec (isthmus.adapters.ddb_values) against boto3's TypeSerializer /
TypeDeserializer, the rules it reproduces without importing boto3."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from boto3.dynamodb.types import Binary, TypeDeserializer, TypeSerializer

from isthmus.adapters.ddb_values import deserialize, serialize

ROOT = Path(__file__).resolve().parents[2]
VALUES: list[Any] = [
    None, True, False, 0, -7, 10**37, Decimal("0.1"), Decimal("-12.50"), Decimal("1E+100"), Decimal("1e-100"),
    Decimal("12345678901234567890123456789012345678"), "", "text", "ünïcødé ✓", b"\x00\xffraw", bytearray(b"ba"),
    {"a": 1, "nested": {"list": [1, "two", None, {"deep": Decimal("3.25")}]}}, [], {}, (1, "tuple"),
    {"s", "t"}, {1, Decimal("2.5")}, frozenset({b"x", b"y"}),
    {"key_id": "k1", "spend": Decimal("0.000123"), "models": ["m1", "m2"], "flags": {"exclude": False}},
]
REFUSED: list[Any] = [
    1.5, Decimal("NaN"), Decimal("Infinity"), Decimal("1E+200"), Decimal("1.234567890123456789012345678901234567891"),
    object(), {1, "mixed"},
]


def _raw(value: Any) -> bytes:
    """The bytes of a bytes, bytearray or boto3 Binary (whose stubs do not show its ``value``)."""
    return bytes(getattr(value, "value", value))


def _plain(value: Any) -> Any:
    """boto3's output with its Binary wrapper unwrapped (ours gives bytes)."""
    if isinstance(value, Binary):
        return _raw(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def _unordered(attribute: dict[str, Any]) -> dict[str, Any]:
    """Set attribute values as sorted lists: a set's order is the set's, not a contract."""
    (kind, data), = attribute.items()
    if kind in {"SS", "NS", "BS"}:
        return {kind: sorted(_raw(v) if isinstance(v, bytes | bytearray | Binary) else v for v in data)}
    if kind == "M":
        return {"M": {k: _unordered(v) for k, v in data.items()}}
    if kind == "L":
        return {"L": [_unordered(v) for v in data]}
    if kind == "B":
        return {"B": _raw(data)}
    return attribute


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_serializes_as_boto3_does(value: Any) -> None:
    # given a Python value boto3 accepts
    # when both codecs serialize it
    ours, theirs = serialize(value), dict(TypeSerializer().serialize(value))
    # then the attribute values are the same
    assert _unordered(ours) == _unordered(theirs)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trips_as_boto3_does(value: Any) -> None:
    # given the attribute value DynamoDB would hold
    attribute = TypeSerializer().serialize(value)
    # when both codecs read it back
    ours, theirs = deserialize(attribute), TypeDeserializer().deserialize(attribute)
    # then they give the same Python value (numbers as Decimal, binary as bytes)
    assert ours == _plain(theirs)
    assert deserialize(serialize(value)) == ours


@pytest.mark.parametrize("value", REFUSED, ids=repr)
def test_refuses_what_dynamodb_cannot_hold_exactly(value: Any) -> None:
    # given a float, a non-finite or an inexact number, an unknown type or a mixed set
    # when it is serialized, then it is refused, as boto3 refuses it
    with pytest.raises(Exception):  # noqa: B017 - boto3 raises TypeError or decimal's Inexact/Rounded
        TypeSerializer().serialize(value)
    with pytest.raises((TypeError, ArithmeticError)):
        serialize(value)


def test_reads_numbers_exactly() -> None:
    # given a number with more digits than a float holds
    attribute = {"N": "0.1000000000000000000000000000000000001"}
    # when it is read, then it is the exact Decimal
    assert deserialize(attribute) == Decimal("0.1000000000000000000000000000000000001")


def test_the_store_path_never_imports_boto3() -> None:
    # given a fresh interpreter with the layer on the path
    code = ("import sys\n"
            "from isthmus.adapters import dynamodb, ddb_items\n"
            "dynamodb.client(); ddb_items.from_item(ddb_items.to_item({'a': 1, 'b': {'c': [1.5]}}))\n"
            "from isthmus.adapters.keywrap import KmsKeyWrapper\n"
            "KmsKeyWrapper('alias/x')._kms()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'boto3', 's3transfer'}))")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "layers"), str(ROOT / "shared")]),
                        "AWS_DEFAULT_REGION": "us-east-1", "ISTHMUS_DYNAMODB_ENDPOINT": "http://127.0.0.1:9"}
    # when it builds the DynamoDB and KMS clients and codes an item
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    # then boto3 (and its s3transfer) was never imported: botocore alone did it
    assert out.strip() == "[]"

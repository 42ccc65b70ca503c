"""Field types for what reaches a store or an upstream: bounded by DynamoDB's limits and HTTP's rules.

DynamoDB refuses a partition key over 2048 bytes and an item over 400 KB (as a ValidationException that
would otherwise surface as "store unavailable"); HTTP forbids CR, LF and NUL in a header value (a CR/LF
there is a header injection toward the upstream). Ids and aliases travel in URL paths, so they keep to a
charset with no ``/`` and no ``..``. Every bound here is far below the store's, leaving room for the other
attributes of the item.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StrictBool, StringConstraints

# DynamoDB: partition key <= 2048 bytes, sort key <= 1024 bytes, item <= 400 KB, documents <= 32 levels deep.
DDB_PARTITION_KEY_BYTES = 2048
MAX_NAME_CHARS = 256
MAX_MODEL_CHARS = 512  # <= 2048 bytes even when every character takes 4 bytes in UTF-8
MAX_HEADER_VALUE_CHARS = 8192
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 8
MAX_LIST_ITEMS = 256
MAX_PRICE_PER_MILLION = Decimal(1_000_000)  # USD per million tokens: a thousand times any real price
INT64_MAX = 2 ** 63 - 1

_NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # no NUL, CR, LF or other C0 control character

# An id: starts with a letter or digit, then letters, digits and . _ : @ + - (no "/", so no "../").
SafeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$")]
# A display name or description: any printable text, bounded.
Name = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS, pattern=_NO_CONTROL)]
# A model name or path ("mlx-community/Qwen3-0.6B", "or:openai/gpt-4o"): printable, bounded in bytes.
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MODEL_CHARS, pattern=_NO_CONTROL)]
# An HTTP header name (RFC 9110 token) and value (no CR/LF/NUL; tab allowed).
HeaderName = Annotated[str, StringConstraints(pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")]
HeaderValue = Annotated[str, StringConstraints(max_length=MAX_HEADER_VALUE_CHARS,
                                               pattern=r"^[^\x00-\x08\x0a-\x1f\x7f]*$")]


def _no_dot_segments(value: str) -> str:
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise ValueError("must not hold an empty, '.' or '..' path segment")
    return value


# A published alias or pool alias: like an id, but "/" may separate names ("or:openai/gpt-4o"); no "..".
Alias = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/\-]{0,127}$"),
                  AfterValidator(_no_dot_segments)]
# Free text stored on a record (descriptions, prefixes): printable, bounded.
Text = Annotated[str, StringConstraints(max_length=4096)]
# A secret sent upstream in a header (an api key): header-safe, bounded.
Secret = Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=r"^[\x21-\x7e]+$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
# A URL as it goes on the wire: printable ASCII (an IDNA host, a percent-encoded path), as HTTP/1.1 sends it; the
# node-agent client writes it into the request line and Host header as it is (a character beyond latin-1 was a 500).
URL = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://[\x21-\x7e]+$")]
StrictFlag = StrictBool  # "stream": "yes" is a mistake to report, not a true to guess
SessionId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=_NO_CONTROL)]
ResponseId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_\-]{1,128}$")]
Seed = Annotated[int, Field(ge=0, le=INT64_MAX)]
# A price: finite, non-negative, bounded (Decimal arithmetic never overflows), at most 18 decimal places (any
# float a client computes fits; 1e-300 would not: DynamoDB numbers stop at 38 digits and 1E-130).
Price = Annotated[Decimal, Field(ge=0, le=MAX_PRICE_PER_MILLION, allow_inf_nan=False, max_digits=38,
                                 decimal_places=18)]
# A money amount (USD): finite, non-negative, bounded, at most 18 decimal places (as a price).
Money = Annotated[Decimal, Field(ge=0, le=Decimal(10) ** 12, allow_inf_nan=False, max_digits=38, decimal_places=18)]
MAX_DURATION_SEC = 100 * 366 * 86400  # a budget period: at most a century


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [c for node in level if isinstance(node, dict | list)
                 for c in (node.values() if isinstance(node, dict) else node)]
        if depth > MAX_METADATA_DEPTH + 1:
            break
    return depth - 1


# What a DynamoDB number can hold: 38 significant digits, a magnitude from 1E-130 to below 1E+126.
_STORE_MIN, _STORE_LIMIT, _STORE_DIGITS = Decimal("1E-130"), Decimal("1E+126"), 38


def _significant_digits(number: Decimal) -> int:
    """Not ``normalize()``: that rounds to the context's 28 digits first."""
    return len("".join(map(str, number.as_tuple().digits)).strip("0")) or 1


def _unstorable(value: Any) -> str | None:
    """What in ``value`` (walked breadth-first) a store cannot keep as it is, else None. Found by the API's fuzzing:
    a metadata number such as 3e+191, or an empty key (DynamoDB: "Empty attribute name"), reached the store and
    came back as a 500 or a 503."""
    level = [value]
    while level:
        for node in level:
            if isinstance(node, dict) and "" in node:
                return "an empty key"
            if isinstance(node, int | float) and not isinstance(node, bool):
                number = Decimal(repr(node)) if isinstance(node, float) else Decimal(node)
                magnitude = abs(number)
                if number and (magnitude < _STORE_MIN or magnitude >= _STORE_LIMIT
                               or _significant_digits(number) > _STORE_DIGITS):
                    return f"the number {node!r}; numbers are kept to 38 digits between 1e-130 and 1e+125"
        level = [c for node in level if isinstance(node, dict | list)
                 for c in (node.values() if isinstance(node, dict) else node)]
    return None


def _bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if _depth(value) > MAX_METADATA_DEPTH:
        raise ValueError(f"nests deeper than {MAX_METADATA_DEPTH} levels")
    unstorable = _unstorable(value)
    if unstorable is not None:
        raise ValueError(f"holds {unstorable}")
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are stored")
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata)]
ModelList = Annotated[list[ModelName], Field(max_length=MAX_LIST_ITEMS)]


def _in_future(value: datetime) -> datetime:
    when = value if value.tzinfo else value.replace(tzinfo=UTC)
    if when <= datetime.now(UTC):
        raise ValueError("must be in the future")
    return value


FutureTime = Annotated[datetime, AfterValidator(_in_future)]

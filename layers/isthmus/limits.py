"""Bounds on what one request may carry, checked once where every body is parsed (:mod:`isthmus.web`).

A body is refused on its size before it is parsed, and on its shape while it is decoded: nesting depth,
integers beyond 64 bits, non-finite numbers, over-long strings and lone UTF-16 surrogates (``"\\ud800"``
decodes to a Python ``str`` that no UTF-8 encoder, DynamoDB or tokenizer accepts). Each refusal is an
:class:`ApiError` naming what is wrong (413 for size, 400 otherwise), never a library's own message.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from isthmus import settings
from isthmus.errors import ApiError, Dialect, dialect_for_path

MIB = 1024 * 1024
# Inference bodies carry whole conversations and base64 images; the control surface carries small records
# (DynamoDB's item limit is 400 KB), so its bound is far lower.
DEFAULT_INFERENCE_BODY_BYTES = 16 * MIB
DEFAULT_CONTROL_BODY_BYTES = 1 * MIB
MAX_JSON_DEPTH = 64  # tool JSON schemas nest ~10 deep; DynamoDB documents stop at 32
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_CONTROL_STRING_CHARS = 64 * 1024  # one field of a control record (names, metadata values, prompts prefixes)
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_inference_path(path: str) -> bool:
    """Public inference routes and the node agent's own routes (which carry the same conversations)."""
    return dialect_for_path(path) is not Dialect.CONTROL or path.startswith("/agent/")


def body_limit(path: str) -> int:
    """``ISTHMUS_MAX_BODY_BYTES`` on inference routes, ``ISTHMUS_MAX_CONTROL_BODY_BYTES`` elsewhere."""
    if is_inference_path(path):
        return settings.env_positive_int("ISTHMUS_MAX_BODY_BYTES", DEFAULT_INFERENCE_BODY_BYTES)
    return settings.env_positive_int("ISTHMUS_MAX_CONTROL_BODY_BYTES", DEFAULT_CONTROL_BODY_BYTES)


def too_large(limit: int, path: str) -> ApiError:
    variable = "ISTHMUS_MAX_BODY_BYTES" if is_inference_path(path) else "ISTHMUS_MAX_CONTROL_BODY_BYTES"
    return ApiError(413, f"Request body is larger than this route's limit of {limit} bytes ({variable}).",
                    code="request_too_large")


class _Refused(Exception):
    """Raised from inside the JSON decoder's hooks (not a ValueError: json must not swallow it)."""


def _bounded_int(text: str) -> int:
    digits = len(text) - (text[:1] == "-")
    # Checked on the digits first: int() of a 5000-digit string is itself the expensive, failing step.
    if digits > 19 or not INT64_MIN <= (value := int(text)) <= INT64_MAX:
        raise _Refused(f"an integer of {digits} digits is outside the 64-bit range this API accepts")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"the number {text[:40]} is out of range")
    return value


def _no_constant(text: str) -> Any:
    raise _Refused(f"{text} is not a JSON number")


def loads(raw: bytes | str, path: str) -> Any:
    """Decode ``raw`` as bounded JSON; any bound broken is a 400 saying which."""
    try:
        value = json.loads(raw, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep() from None
    except _Refused as exc:
        raise ApiError(400, f"Request body is not acceptable: {exc}.", code="invalid_json") from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"Request body is not valid UTF-8 (byte {exc.start}).", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
                       code="invalid_json") from None
    check_json(value, max_string=None if is_inference_path(path) else MAX_CONTROL_STRING_CHARS)
    return value


def _too_deep() -> ApiError:
    return ApiError(400, f"Request body nests deeper than {MAX_JSON_DEPTH} levels.", code="json_too_deep")


def check_text(text: str, max_chars: int | None = None, *, field: str = "a string") -> None:
    if max_chars is not None and len(text) > max_chars:
        raise ApiError(400, f"{field} is {len(text)} characters long; at most {max_chars} are accepted.",
                       code="string_too_long")
    if not text.isascii() and _SURROGATE.search(text):
        raise ApiError(400, f"{field} holds a lone UTF-16 surrogate; text must be valid Unicode.",
                       code="invalid_unicode")


def check_json(value: Any, *, max_string: int | None = None, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Walk a decoded JSON value without recursion (a deep value must not crash its own check)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node, max_string)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth > max_depth:
            raise _too_deep()
        children = node.values() if isinstance(node, dict) else node
        if isinstance(node, dict):
            for key in node:
                check_text(key, max_string, field="an object key")
        stack.extend((child, depth + 1) for child in children if isinstance(child, str | dict | list))

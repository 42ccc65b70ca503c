"""Credentials: where a key is read from, how secrets are made and hashed, and the master key.

Nothing here logs a secret: functions take and return them, callers never pass them to a logger.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections.abc import Mapping

from isthmus.errors import ApiError

KEY_PREFIX = "gw-"
# Order matters: the first header present wins.
KEY_HEADERS = ("otari-key", "authorization", "x-api-key", "anyllm-key", "x-anyllm-key")
_KEY_HEADER_BYTES = frozenset(name.encode() for name in KEY_HEADERS)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """The key headers only, by lower-case name. Starlette's ``Headers`` keep the raw (already lower-case) list:
    read once, decoding only the key headers (every request passes here; decoding each header cost ~10 us)."""
    raw = getattr(headers, "raw", None)
    if isinstance(raw, list):
        return {k.lower().decode("latin-1"): v.decode("latin-1") for k, v in raw if k.lower() in _KEY_HEADER_BYTES}
    return {k.lower(): v for k, v in headers.items()}


def extract_token(headers: Mapping[str, str]) -> str | None:
    """The caller's key, from ``Otari-Key`` (raw or ``Bearer``), ``Authorization: Bearer`` (any other
    scheme is a 401), ``x-api-key``, ``AnyLLM-Key``, ``X-AnyLLM-Key``; None when none is sent."""
    h = _lower(headers)
    for name in KEY_HEADERS:
        raw = h.get(name)
        if raw is None or not raw.strip():
            continue
        value = raw.strip()
        scheme, _, rest = value.partition(" ")
        if name == "authorization":
            if scheme.lower() != "bearer" or not rest.strip():
                raise ApiError(401, "Invalid header format", headers={"WWW-Authenticate": "Bearer"})
            return rest.strip()
        if scheme.lower() == "bearer" and rest.strip():
            return rest.strip()
        return value
    return None


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_master_key() -> str:
    return "sk-master-" + secrets.token_urlsafe(32)


def hash_key(secret: str, pepper: str) -> str:
    """HMAC-SHA256(pepper, secret), hex: what the keys table stores instead of the secret."""
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:10]


def display_suffix(secret: str) -> str:
    return secret[-4:]


def constant_time_equal(a: str, b: str) -> bool:
    # Compare digests so that the lengths of the secrets do not leak either.
    return hmac.compare_digest(sha256_hex(a), sha256_hex(b))


def env_master_key() -> str | None:
    return os.environ.get("ISTHMUS_MASTER_KEY") or None


def env_pepper() -> str | None:
    return os.environ.get("ISTHMUS_KEY_PEPPER") or None


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1, ``localhost`` and in-process test clients."""
    if not host:
        return False
    if host in ("localhost", "testclient"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""The tenancy stores (built by isthmus.wiring), the key pepper, the master key (keyed vs open mode) and
management auth.

Modes: *keyed* when ``ISTHMUS_MASTER_KEY`` is set or ``keys.bootstrap_master_key()`` stored a master key hash
in the settings table; *open* otherwise (LAN mode: inference needs no key, and management endpoints
answer only callers on loopback).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from isthmus import auth
from isthmus.background import SingleFlight
from isthmus.errors import ApiError, store_failure
from isthmus.observability import get_logger
from isthmus.ports.tenancy import BudgetStore, KeyStore, PricingStore, RateLimiter, SettingsStore, UsageStore, UserStore

T = TypeVar("T")
S = TypeVar("S")
log = get_logger("tenancy")

PEPPER_SETTING = "key_pepper"
MASTER_HASH_SETTING = "master_key_sha256"
MODE_CACHE_SEC = 10.0
MODE_STALE_SEC = 60.0  # past MODE_CACHE_SEC the mode still answers while one background read refreshes it


@dataclass
class Stores:
    keys: KeyStore
    users: UserStore
    budgets: BudgetStore
    settings: SettingsStore
    usage: UsageStore
    pricing: PricingStore
    ratelimits: RateLimiter


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """A store call off the event loop; an unreachable or failing store is a 503, never a silent allow."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ApiError:
        raise
    except Exception as exc:
        failure = store_failure(exc)
        if failure is None:
            raise
        code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", type(exc).__name__)
        log.warning("store call failed", extra={"store_error": code, "op": getattr(fn, "__name__", "?")})
        raise failure from None


class OffLoop(Generic[S]):
    """A blocking service behind ``await``: every method runs through :func:`call` (in the threadpool; a failing
    store is a 503 + Retry-After), so handlers see one kind of service and never thread a call themselves."""

    def __init__(self, target: S) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._target, name)

        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return await call(method, *args, **kwargs)

        awaited.__name__ = name
        return awaited


def off_loop(target: S) -> OffLoop[S]:
    return OffLoop(target)


class Credentials:
    """Pepper and master key, cached per process (the pepper forever, the mode for a few seconds)."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self._pepper: str | None = None
        self._mode: tuple[float, str | None] | None = None  # (read at, stored master hash or None)
        self._mode_refresh = SingleFlight("mode")

    def pepper_sync(self) -> str:
        if self._pepper is None:
            self._pepper = auth.env_pepper() or self.stores.settings.put_if_absent(
                PEPPER_SETTING, secrets.token_hex(32))
        return self._pepper

    async def pepper(self) -> str:
        return self._pepper if self._pepper is not None else await call(self.pepper_sync)

    async def stored_master_hash(self) -> str | None:
        """The stored master key's hash (None: open mode), read at most every MODE_CACHE_SEC. Once that old, the
        read happens off the request path (stale-while-revalidate: an open gateway's requests never wait on it),
        until MODE_STALE_SEC, past which a request reads it itself (a store that stays unreachable is a 503)."""
        mode = self._mode
        if mode is not None:
            age = time.monotonic() - mode[0]
            if age <= MODE_CACHE_SEC:
                return mode[1]
            if age <= MODE_STALE_SEC:
                self._mode_refresh.start("mode", self._read_mode())
                return mode[1]
        return await self._read_mode()

    async def _read_mode(self) -> str | None:
        value = await call(self.stores.settings.value, MASTER_HASH_SETTING)
        self._mode = (time.monotonic(), value)
        return value

    async def keyed(self) -> bool:
        return auth.env_master_key() is not None or await self.stored_master_hash() is not None

    async def is_master(self, token: str) -> bool:
        env = auth.env_master_key()
        if env is not None:
            return auth.constant_time_equal(token, env)
        stored = await self.stored_master_hash()
        return stored is not None and auth.constant_time_equal(auth.sha256_hex(token), stored)

    async def require_master(self, headers: Mapping[str, str], client_host: str | None) -> None:
        """Management auth: the master key whenever one is configured; with none, loopback callers only."""
        token = auth.extract_token(headers)
        if not await self.keyed():
            if auth.is_loopback(client_host):
                return
            raise ApiError(401, "No master key is configured: management endpoints answer only on localhost. "
                           "Set ISTHMUS_MASTER_KEY to manage the gateway remotely.")
        if token is None:
            raise ApiError(401, "Missing master key: send it as Authorization: Bearer <master key>.",
                           headers={"WWW-Authenticate": "Bearer"})
        if not await self.is_master(token):
            raise ApiError(401, "Invalid API key", headers={"WWW-Authenticate": "Bearer"})

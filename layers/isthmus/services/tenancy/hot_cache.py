"""Brief per-process caches on the inference hot path: who a key belongs to and what a model costs.

Why: each lookup is a DynamoDB round trip on every request. A few seconds of staleness is the price:
within a process, the key, user and pricing services clear these caches on every change (the local edge
runs them all in one process, so a rotated or deactivated key is dead at once); another Lambda instance
may honour the old state for at most the TTL. Only positive answers are cached, never "no such key" in keyed
mode; in open mode an unknown key (an SDK's placeholder) is cached as anonymous, and that entry counts for
nothing once the gateway is keyed.

Past the TTL an entry is *stale*: the gate still answers from it while one background read refreshes it
(so no request waits on the store for a lookup it made seconds ago), until ``STALE_FACTOR`` times the TTL,
when it is gone and the next request reads the store itself. A refresh that finds the key revoked drops
the entry, so another instance honours a revoked key for at most the TTL plus one store round trip.
"""

from __future__ import annotations

import os
import time
from typing import Generic, TypeVar

from isthmus import settings

V = TypeVar("V")


def _store_location() -> str:
    return f"{settings.dynamodb_endpoint()}|{settings.table_prefix()}"


STALE_FACTOR = 12


class TtlCache(Generic[V]):
    def __init__(self, env_var: str, default_s: float, max_items: int = 10_000) -> None:
        self.ttl_s = float(os.environ.get(env_var, default_s))
        self.max_items = max_items
        self._items: dict[str, tuple[float, V]] = {}  # key -> (fresh until, value)
        self._location = ""

    def get(self, key: str) -> V | None:
        value, stale = self.lookup(key)
        return None if stale else value

    def lookup(self, key: str) -> tuple[V | None, bool]:
        """(value, stale): a stale value is still usable while a refresh runs; (None, False) if absent."""
        location = _store_location()
        if location != self._location:  # another store (tests): nothing cached applies to it
            self._items.clear()
            self._location = location
        found = self._items.get(key)
        if found is None:
            return None, False
        now = time.monotonic()
        if found[0] + self.ttl_s * (STALE_FACTOR - 1) <= now:
            self._items.pop(key, None)
            return None, False
        return found[1], found[0] <= now

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def put(self, key: str, value: V) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._items) >= self.max_items:
            self._items.clear()  # crude but bounded; entries live seconds anyway
        self._items[key] = (time.monotonic() + self.ttl_s, value)

    def clear(self) -> None:
        self._items.clear()


principals: TtlCache[object] = TtlCache("ISTHMUS_AUTH_CACHE_SECONDS", 5.0)
prices: TtlCache[object] = TtlCache("ISTHMUS_PRICE_CACHE_SECONDS", 5.0)


generation = 0  # bumped by every key, user or budget change in this process (budget leases watch it)


def forget_keys() -> None:
    """A key, user or budget changed: the next request re-reads who it is and what it may spend."""
    global generation
    generation += 1
    principals.clear()


def forget_prices() -> None:
    prices.clear()

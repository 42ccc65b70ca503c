"""Session-scoped prefix cache: one KV cache per ``session_id``, LRU under a byte budget, with a TTL.

An entry holds the tokens its KV cache contains (the previous turn's prompt plus its completion). The
engine *takes* an entry while a sequence generates from it (so two requests never share one mutable
cache) and *puts* the extracted cache back when the sequence ends.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class CacheEntry:
    tokens: list[int]  # exactly the tokens whose keys/values the cache holds
    cache: Any  # mlx-lm per-layer cache list; opaque here
    nbytes: int
    prompt_tokens: int  # length of the prompt that produced it (to recognise an identical re-send)
    stored_at: float = 0.0


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def reusable_prefix(entry: CacheEntry, prompt: list[int], *, can_trim: bool) -> int:
    """How many prompt tokens the entry can serve (0 = miss).

    At least one prompt token must be prefilled to get logits, so a prompt the cache already covers
    (an identical re-send) is treated as a miss and reports no cached tokens. A divergent prompt reuses
    the common prefix only if the cache can be trimmed back to it.
    """
    common = common_prefix_len(entry.tokens, prompt)
    if common == 0 or common >= len(prompt):
        return 0
    if common < len(entry.tokens) and not can_trim:
        return 0
    return common


class SessionPrefixCache:
    def __init__(self, max_bytes: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def take(self, session_id: str) -> CacheEntry | None:
        """Remove and return the session's entry if present and fresh."""
        self.expire()
        return self._entries.pop(session_id, None)

    def put(self, session_id: str, entry: CacheEntry) -> None:
        if entry.nbytes > self.max_bytes:
            return  # would evict everything else and still not fit
        entry.stored_at = self._clock()
        self._entries.pop(session_id, None)
        self._entries[session_id] = entry
        self.expire()
        while self.nbytes > self.max_bytes and self._entries:
            self._entries.popitem(last=False)  # least recently used first

    def expire(self) -> None:
        cutoff = self._clock() - self.ttl_s
        for key in [k for k, e in self._entries.items() if e.stored_at < cutoff]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def sessions(self) -> list[str]:
        return list(self._entries)

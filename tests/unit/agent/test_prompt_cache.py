"""The session prefix cache's bookkeeping: reuse rules, LRU by bytes, TTL."""

from __future__ import annotations

from local_runtime.agent.prompt_cache import (
    CacheEntry,
    SessionPrefixCache,
    common_prefix_len,
    reusable_prefix,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def entry(tokens: list[int], nbytes: int = 10) -> CacheEntry:
    return CacheEntry(tokens=tokens, cache=object(), nbytes=nbytes, prompt_tokens=len(tokens))


def test_common_prefix() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0


def test_next_turn_extending_the_cache_reuses_all_cached_tokens() -> None:
    assert reusable_prefix(entry([1, 2, 3, 4]), [1, 2, 3, 4, 5, 6], can_trim=False) == 4


def test_divergent_prompt_reuses_common_prefix_only_when_trimmable() -> None:
    cached = entry([1, 2, 3, 9, 9])
    assert reusable_prefix(cached, [1, 2, 3, 4, 5], can_trim=True) == 3
    assert reusable_prefix(cached, [1, 2, 3, 4, 5], can_trim=False) == 0


def test_identical_resend_and_unrelated_prompt_are_misses() -> None:
    cached = entry([1, 2, 3, 4])
    assert reusable_prefix(cached, [1, 2, 3, 4], can_trim=True) == 0
    assert reusable_prefix(cached, [1, 2], can_trim=True) == 0
    assert reusable_prefix(cached, [7, 8], can_trim=True) == 0


def test_take_removes_the_entry_so_it_is_never_shared() -> None:
    cache = SessionPrefixCache(max_bytes=100, ttl_s=60)
    cache.put("s", entry([1]))
    assert cache.take("s") is not None
    assert cache.take("s") is None


def test_least_recently_used_entries_go_first_when_over_budget() -> None:
    cache = SessionPrefixCache(max_bytes=25, ttl_s=60)
    cache.put("a", entry([1]))
    cache.put("b", entry([2]))
    cache.put("a", entry([1, 1]))  # refresh a
    cache.put("c", entry([3]))
    assert cache.sessions() == ["a", "c"]
    assert cache.nbytes == 20


def test_entry_larger_than_budget_is_not_kept() -> None:
    cache = SessionPrefixCache(max_bytes=5, ttl_s=60)
    cache.put("a", entry([1], nbytes=6))
    assert len(cache) == 0


def test_expired_entries_are_dropped() -> None:
    clock = FakeClock()
    cache = SessionPrefixCache(max_bytes=100, ttl_s=10, clock=clock)
    cache.put("a", entry([1]))
    clock.now = 11
    assert cache.take("a") is None
    assert len(cache) == 0

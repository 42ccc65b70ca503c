"""The cache bookkeeping every rank of a sharded group applies alike (join, leave, trim) and the follower's
refusal of an op that does not match its caches."""

from __future__ import annotations

from typing import Any

import pytest

mx = pytest.importorskip("mlx.core")

from local_runtime.agent import shard_caches  # noqa: E402
from local_runtime.agent.shard_follower import FollowerCaches  # noqa: E402
from local_runtime.agent.shard_wire import OP_DROP, OP_JOIN, OP_LEAVE, Op  # noqa: E402


def sequence(length: int, seed: int, layers: int = 2) -> list[Any]:
    from mlx_lm.models.cache import KVCache

    mx.random.seed(seed)
    caches = []
    for _ in range(layers):
        c = KVCache()
        if length:
            c.update_and_fetch(mx.random.normal((1, 2, length, 4)), mx.random.normal((1, 2, length, 4)))
        caches.append(c)
    return caches


def kv(cache: list[Any]) -> list[Any]:
    return [(c.keys[..., :c.offset, :], c.values[..., :c.offset, :]) for c in cache]


def test_a_row_leaves_the_batch_with_exactly_the_cache_it_joined_with() -> None:
    # given three sequences of different lengths, two joined first and one later
    a, b, c = sequence(5, 1), sequence(2, 2), sequence(7, 3)
    expected = [kv(x) for x in (a, b, c)]
    batch = shard_caches.join(shard_caches.join(None, [a, b]), [c])
    assert shard_caches.rows(batch) == 3
    # when the middle row leaves, then the others
    rest_of_batch, out = shard_caches.leave(batch, [1])
    assert rest_of_batch is not None and shard_caches.rows(rest_of_batch) == 2
    left, rest = shard_caches.leave(rest_of_batch, [0, 1])
    # then each comes out as it went in, and the batch is gone
    assert left is None
    for got, want in zip([out[1], rest[0], rest[1]], [expected[1], expected[0], expected[2]], strict=True):
        for (gk, gv), (wk, wv) in zip(kv(got), want, strict=True):
            assert mx.array_equal(gk, wk) and mx.array_equal(gv, wv)


def test_trim_to_follows_a_shorter_offset_and_refuses_a_longer_one() -> None:
    cache = sequence(6, 4)
    shard_caches.trim_to(cache, 4)
    assert cache[0].offset == 4
    with pytest.raises(shard_caches.OutOfStep):
        shard_caches.trim_to(cache, 5)


class _Model:
    """Enough of a model for make_prompt_cache: two layers of plain KV caches."""

    layers = [object(), object()]


def test_a_follower_refuses_ops_that_do_not_match_its_caches() -> None:
    caches = FollowerCaches(_Model())
    # a sequence it never saw, continued at offset 3
    with pytest.raises(shard_caches.OutOfStep):
        caches.sequence(7, 3)
    # rows out of a batch it does not have
    with pytest.raises(shard_caches.OutOfStep):
        caches.apply(Op(OP_LEAVE, payload=(0, 0)))
    # a new sequence joins (made empty at offset 0), is kept on leaving, then dropped
    caches.apply(Op(OP_JOIN, payload=(4, 0)))
    assert caches.batch is not None and not caches.sequences
    caches.apply(Op(OP_LEAVE, payload=(0, 9)))
    assert caches.batch is None and set(caches.sequences) == {9}
    caches.apply(Op(OP_DROP, payload=(9, 12)))
    assert not caches.sequences

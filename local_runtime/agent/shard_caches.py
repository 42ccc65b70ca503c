"""The KV-cache bookkeeping every rank of a sharded group runs alike, so that the ranks' caches stay in step:
each rank applies the same :mod:`~local_runtime.agent.shard_wire` op with these functions to its own layers'
caches. A sequence's cache is a per-layer list of mlx-lm ``KVCache``; the batch's, of ``BatchKVCache`` (its
rows left-padded to a common length, as mlx-lm's ``BatchGenerator`` keeps them)."""

from __future__ import annotations

from typing import Any


class OutOfStep(RuntimeError):
    """This rank's caches no longer match rank 0's: the group cannot go on."""


def trim_to(cache: list[Any], offset: int) -> None:
    """Rank 0 trimmed this sequence's cache (a prefix reused, a step taken back): do the same."""
    from mlx_lm.models.cache import trim_prompt_cache

    held = int(cache[0].offset)
    if held > offset:
        trim_prompt_cache(cache, held - offset)
    elif held < offset:
        raise OutOfStep(f"a cache holds {held} tokens where rank 0's holds {offset}")


def join(batch: list[Any] | None, caches: list[list[Any]]) -> list[Any]:
    """The batch with these sequences' caches appended as rows, in order (a new batch when there is none)."""
    merged = [layer[0].merge(list(layer)) for layer in zip(*caches, strict=True)]
    if batch is None:
        return merged
    for rows, more in zip(batch, merged, strict=True):
        rows.extend(more)
    return batch


def rows(batch: list[Any]) -> int:
    return int(batch[0].offset.shape[0])


def leave(batch: list[Any], removed: list[int]) -> tuple[list[Any] | None, dict[int, list[Any]]]:
    """Take these rows out of the batch: (the batch left, or None when empty; each row's own cache)."""
    from mlx_lm.models.cache import KVCache

    gone = set(removed)
    extracted = {i: [c.extract(i) if c.keys is not None else KVCache() for c in batch] for i in removed}
    keep = [i for i in range(rows(batch)) if i not in gone]
    if not keep:
        return None, extracted
    for c in batch:
        c.filter(keep)
    return batch, extracted

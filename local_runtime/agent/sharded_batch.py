"""Continuous batching on rank 0 of a sharded group: what mlx-lm's ``BatchGenerator`` does on one node (the
engine calls the same ``insert`` / ``next`` / ``remove``), with every cache change made through the head, so
the followers' caches change in step (mlx-lm's generator merges, pads, splits and copies its caches in ways
no follower could follow).

Each ``next()`` prefills at most one chunk of the oldest waiting sequence in its own cache (so a long prompt
does not stall the running batch for more than a chunk), moves a sequence whose prompt is in into the batch,
then runs one decode step for every row of the batch: one forward pass over the ring for all of them.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass
from typing import Any

from local_runtime.agent.shard_head import SequenceCaches, ShardedHead


@dataclass
class Response:
    """One generated token, as mlx-lm's ``GenerationBatch.Response`` has it (the fields the engine reads)."""

    uid: int
    token: int
    logprobs: Any  # this row's log-probabilities over the vocabulary (lazy: computed only if read)
    finish_reason: str | None  # "stop" (an end token) or "length", else None
    prompt_cache: SequenceCaches | None = None  # when finished: its cache, holding exactly all_tokens
    all_tokens: list[int] | None = None


@dataclass
class _Sequence:
    uid: int
    pending: list[int]  # fed to the model next: the prompt left to prefill, then the last token sampled
    cache: SequenceCaches | None  # its own cache until it joins the batch
    tokens: list[int]  # exactly the tokens its cache holds
    max_tokens: int
    sampler: Any
    generated: int = 0


class ShardedBatchGenerator:
    def __init__(self, head: ShardedHead, *, stop_tokens: set[int], prefill_step_size: int = 512) -> None:
        self.head = head
        self.stop_tokens = stop_tokens
        self.prefill_step_size = prefill_step_size
        self._uids = itertools.count()
        self._waiting: deque[_Sequence] = deque()
        self._rows: list[_Sequence] = []  # the batch, in its row order
        self._batch: list[Any] | None = None

    def insert(self, prompts: list[list[int]], max_tokens: list[int], caches: list[Any] | None = None,
               all_tokens: list[list[int]] | None = None, samplers: list[Any] | None = None) -> list[int]:
        """New sequences (``caches``: ones the head made, holding ``all_tokens``); returns their uids."""
        uids = []
        for i, prompt in enumerate(prompts):
            if not prompt:
                raise ValueError("a sequence needs at least one token to feed")
            cache = caches[i] if caches else self.head.make_cache()
            seq = _Sequence(next(self._uids), list(prompt), cache, list(all_tokens[i]) if all_tokens else [],
                            max_tokens[i], samplers[i] if samplers else None)
            self._waiting.append(seq)
            uids.append(seq.uid)
        return uids

    def next(self) -> tuple[list[Any], list[Response]]:
        self._prefill()
        return [], self._decode() if self._rows else []

    def remove(self, uids: list[int], return_prompt_caches: bool = False) -> dict[int, tuple[Any, list[int]]]:
        """Stop these sequences; with ``return_prompt_caches``, {uid: (its cache, the tokens it holds)}."""
        wanted = set(uids)
        out: dict[int, tuple[Any, list[int]]] = {}
        rows = [i for i, seq in enumerate(self._rows) if seq.uid in wanted]
        if rows:
            for seq, cache in self._leave(rows, keep=return_prompt_caches).values():
                if cache is not None:
                    out[seq.uid] = (cache, seq.tokens)
        for seq in [s for s in self._waiting if s.uid in wanted]:
            self._waiting.remove(seq)
            if return_prompt_caches:
                out[seq.uid] = (seq.cache, seq.tokens)
        return out

    # ---- steps ---------------------------------------------------------------------------------------------

    def _prefill(self) -> None:
        import mlx.core as mx

        if not self._waiting:
            return
        seq = self._waiting[0]
        assert seq.cache is not None
        if len(seq.pending) > 1:  # the last prompt token is the first decode step's input
            chunk = seq.pending[:min(self.prefill_step_size, len(seq.pending) - 1)]
            self.head(mx.array(chunk)[None], cache=seq.cache)
            mx.eval([c.state for c in seq.cache])
            seq.tokens += chunk
            seq.pending = seq.pending[len(chunk):]
            if len(seq.pending) > 1:
                return  # the rest with the next steps
        self._waiting.popleft()
        self._batch = self.head.join(self._batch, [seq.cache])
        seq.cache = None
        self._rows.append(seq)

    def _decode(self) -> list[Response]:
        import mlx.core as mx

        assert self._batch is not None
        inputs = mx.array([[seq.pending[-1]] for seq in self._rows])
        logits = self.head.forward_batch(inputs, self._batch)[:, -1, :]
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        if all(seq.sampler is None for seq in self._rows):
            sampled = mx.argmax(logprobs, axis=-1)  # greedy, as mlx-lm's default sampler
        else:
            sampled = mx.concatenate([
                (seq.sampler(logprobs[i:i + 1]) if seq.sampler is not None else mx.argmax(logprobs[i:i + 1], -1))
                for i, seq in enumerate(self._rows)])
        tokens: list[int] = sampled.tolist()  # type: ignore[assignment]
        responses, finished = [], []
        for row, (seq, token) in enumerate(zip(self._rows, tokens, strict=True)):
            seq.tokens.append(seq.pending[-1])  # now in the cache
            seq.pending = [token]
            seq.generated += 1
            reason = "stop" if token in self.stop_tokens else "length" if seq.generated >= seq.max_tokens else None
            responses.append(Response(seq.uid, token, logprobs[row], reason))
            if reason is not None:
                finished.append(row)
        if finished:
            for row, (seq, cache) in self._leave(finished, keep=True).items():
                responses[row].prompt_cache, responses[row].all_tokens = cache, seq.tokens
        return responses

    def _leave(self, rows: list[int], *, keep: bool) -> dict[int, tuple[_Sequence, SequenceCaches | None]]:
        """Take these rows out of the batch: {row: (its sequence, its cache when kept)}."""
        assert self._batch is not None
        self._batch, caches = self.head.leave(self._batch, rows, keep=keep)
        left = {row: (self._rows[row], caches.get(row)) for row in rows}
        self._rows = [seq for row, seq in enumerate(self._rows) if row not in left]
        return left

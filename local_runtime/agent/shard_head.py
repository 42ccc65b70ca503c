"""Rank 0 of a sharded group: the model the engine runs, whose every forward pass and cache change is told to
the followers first (see :mod:`local_runtime.agent.shard_wire`).

A sequence's cache is a :class:`SequenceCaches`, named by a serial the followers know it by; when rank 0 lets
go of one (the prefix cache evicts it, a request is cancelled, it joins the batch), the followers are told to
drop theirs with the next op. The batch's cache is the generator's (:mod:`local_runtime.agent.sharded_batch`),
changed only through :meth:`ShardedHead.join` and :meth:`ShardedHead.leave`.
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

from isthmus_contracts.agent import ShardSpec
from local_runtime.agent import shard_caches
from local_runtime.agent.shard_wire import DTYPES, OP_DROP, OP_FORWARD, OP_JOIN, OP_LEAVE, OP_STOP, Op, Wire


class SequenceCaches(list[Any]):
    """One sequence's per-layer KV caches on rank 0, with the serial the followers know their copies by."""

    serial = 0


class ShardedHead:
    """``model(inputs, cache=...)`` as mlx-lm's generation code calls it (the solo path), plus the batch's
    forward pass and cache ops for the sharded batch generator."""

    def __init__(self, model: Any, spec: ShardSpec, group: Any) -> None:
        self.model, self.spec = model, spec
        self.wire = Wire(spec, group)
        self.tensor = spec.mode == "tensor"
        self.layers = model.model.layers  # mlx-lm reads .layers (e.g. to size caches)
        self._serials = itertools.count(1)
        self._dropped: list[int] = []  # serials rank 0 let go of, to tell the followers with the next op
        self._dtype = 0 if self.tensor else DTYPES.index(str(_param_dtype(model)).rsplit(".", 1)[-1])
        self.rows_peak = 0  # the most sequences one forward pass has served since the load

    # ---- sequences -----------------------------------------------------------------------------------------

    def make_cache(self) -> SequenceCaches:
        from mlx_lm.models.cache import make_prompt_cache

        return self._own(make_prompt_cache(self.model), next(self._serials))

    def _own(self, layers: list[Any], serial: int) -> SequenceCaches:
        caches = SequenceCaches(layers)
        caches.serial = serial
        # when rank 0 lets go of a sequence's cache, the followers drop their copies (sent with the next op)
        weakref.finalize(caches, self._dropped.append, serial)
        return caches

    def __call__(self, inputs: Any, cache: Any = None, input_embeddings: Any = None) -> Any:
        if not isinstance(cache, SequenceCaches):
            raise RuntimeError("a sharded model runs only on caches it made (make_cache)")
        return self._forward(inputs, cache, cache.serial, int(cache[0].offset))

    # ---- the batch -----------------------------------------------------------------------------------------

    def forward_batch(self, inputs: Any, batch: list[Any]) -> Any:
        self.rows_peak = max(self.rows_peak, int(inputs.shape[0]))
        return self._forward(inputs, batch, 0, 0)

    def join(self, batch: list[Any] | None, sequences: list[SequenceCaches]) -> list[Any]:
        """The batch with these sequences as its last rows (their own caches are spent)."""
        self._send(Op(OP_JOIN, payload=tuple(v for s in sequences for v in (s.serial, int(s[0].offset)))))
        return shard_caches.join(batch, list(sequences))

    def leave(self, batch: list[Any], removed: list[int], *,
              keep: bool) -> tuple[list[Any] | None, dict[int, SequenceCaches]]:
        """Take these rows out of the batch; with ``keep``, each row's cache as a sequence of its own."""
        serials = {row: next(self._serials) if keep else 0 for row in removed}
        self._send(Op(OP_LEAVE, payload=tuple(v for row in removed for v in (row, serials[row]))))
        left, extracted = shard_caches.leave(batch, removed)
        return left, ({row: self._own(extracted[row], serials[row]) for row in removed} if keep else {})

    # ---- the wire ------------------------------------------------------------------------------------------

    def _send(self, op: Op) -> None:
        if self._dropped:
            dropped = tuple(self._dropped)
            del self._dropped[:len(dropped)]  # the same list: the finalizers append to it (also meanwhile)
            self.wire.send(Op(OP_DROP, payload=dropped))
        self.wire.send(op)

    def _forward(self, inputs: Any, cache: list[Any], serial: int, offset: int) -> Any:
        import mlx.core as mx

        rows, tokens = int(inputs.shape[0]), int(inputs.shape[1])
        ids = tuple(int(t) for t in inputs.reshape(-1).tolist()) if self.tensor else ()
        self._send(Op(OP_FORWARD, serial, rows, tokens, offset, self._dtype, ids))
        if self.tensor:
            logits = self.model(inputs, cache=cache)
            mx.eval(logits)  # every collective of the pass must run now, in the order the followers run them
            return logits
        from mlx_lm.models.base import create_attention_mask

        inner = self.model.model
        h = inner.embed_tokens(inputs)
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(inner.layers, cache, strict=True):
            h = layer(h, mask, cache=c)
        h = self.wire.send_hidden(h)
        out = inner.norm(h)
        lm_head = getattr(self.model, "lm_head", None)
        return lm_head(out) if lm_head is not None else inner.embed_tokens.as_linear(out)

    def stop_followers(self) -> None:
        """End the followers' loops (at unload); best effort: a lost group has nobody to tell."""
        try:
            self._send(Op(OP_STOP))
        except RuntimeError as exc:
            import logging

            logging.getLogger("isthmus.agent.sharding").warning("could not stop the followers: %s", exc)


def _param_dtype(model: Any) -> Any:
    import mlx.core as mx
    from mlx.utils import tree_flatten

    floats = (mx.float32, mx.float16, mx.bfloat16)
    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    return next(v.dtype for _, v in flat if v.dtype in floats)

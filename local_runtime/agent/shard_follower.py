"""A follower of a sharded group: its loop mirrors every op of rank 0 (see
:mod:`local_runtime.agent.shard_wire`) on its own layers (``pipeline``) or slices (``tensor``), and owns
nothing else: no tokenizer, no HTTP requests, no decisions."""

from __future__ import annotations

from typing import Any

from isthmus_contracts.agent import ShardSpec
from local_runtime.agent import shard_caches
from local_runtime.agent.shard_wire import OP_DROP, OP_FORWARD, OP_JOIN, OP_LEAVE, OP_STOP, Op, Wire


class FollowerCaches:
    """The caches rank 0 has told this rank to keep: one per sequence (by serial) and the batch's."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.sequences: dict[int, list[Any]] = {}
        self.batch: list[Any] | None = None

    def sequence(self, serial: int, offset: int) -> list[Any]:
        """Sequence ``serial``'s cache, trimmed to ``offset`` (a new one when rank 0 starts it at 0)."""
        from mlx_lm.models.cache import make_prompt_cache

        cache = self.sequences.get(serial)
        if cache is None:
            if offset:
                raise shard_caches.OutOfStep(f"rank 0 continues sequence {serial}, unknown here")
            cache = self.sequences[serial] = make_prompt_cache(self.model)
        shard_caches.trim_to(cache, offset)
        return cache

    def apply(self, op: Op) -> None:
        """A cache op (JOIN, LEAVE, DROP) as rank 0 applied it."""
        if op.op == OP_DROP:
            for serial in op.payload:
                self.sequences.pop(serial, None)
        elif op.op == OP_JOIN:
            joining = [self.sequence(serial, offset) for serial, offset in op.pairs()]
            for serial, _ in op.pairs():
                del self.sequences[serial]
            self.batch = shard_caches.join(self.batch, joining)
        elif op.op == OP_LEAVE:
            if self.batch is None:
                raise shard_caches.OutOfStep("rank 0 takes rows out of a batch this rank does not have")
            self.batch, extracted = shard_caches.leave(self.batch, [row for row, _ in op.pairs()])
            for row, serial in op.pairs():
                if serial:
                    self.sequences[serial] = extracted[row]
        else:
            raise shard_caches.OutOfStep(f"unknown op {op.op}")


def follow(model: Any, spec: ShardSpec, group: Any, stats: dict[str, Any] | None = None) -> int:
    """Mirror rank 0 until it says stop (returns the forward passes run) or the group breaks (raises
    RuntimeError: a peer was lost). ``stats`` (the agent's shard status) gets the passes and the sequences
    held."""
    import mlx.core as mx

    wire = Wire(spec, group)
    caches = FollowerCaches(model)
    hidden = model.args.hidden_size
    passes = 0
    while True:
        op = wire.recv()
        if op.op == OP_STOP:
            return passes
        if op.op != OP_FORWARD:
            caches.apply(op)
        else:
            cache = caches.sequence(op.serial, op.offset) if op.serial else caches.batch
            if cache is None:
                raise shard_caches.OutOfStep("rank 0 runs a batch this rank does not have")
            if spec.mode == "tensor":
                ids = mx.array(op.payload, dtype=mx.int32).reshape(op.rows, op.tokens)
                mx.eval(model(ids, cache=cache))
            else:
                from mlx_lm.models.base import create_attention_mask

                h = wire.recv_hidden((op.rows, op.tokens, hidden), op.dtype)
                mask = create_attention_mask(h, cache[0])
                for layer, c in zip(model.model.layers, cache, strict=True):
                    h = layer(h, mask, cache=c)
                wire.send_hidden(h)
            passes += 1
        if stats is not None:
            stats["forward_passes"], stats["sequences_held"] = passes, len(caches.sequences)

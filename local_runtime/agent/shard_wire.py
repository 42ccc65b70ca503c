"""What rank 0 of a sharded group tells the other ranks, and how it travels (``mx.distributed`` only).

Rank 0 decides everything (which sequences run, when a batch grows or shrinks, what the prefix cache keeps);
the followers keep KV caches that mirror rank 0's, one per sequence (named by a *serial*) plus the running
batch's, and change them only when told. Every change is one :class:`Op`:

- ``FORWARD`` one forward pass: of sequence ``serial`` (its cache first trimmed to ``offset``, or made when
  new), or of the batch (``serial`` 0), over ``rows`` x ``tokens`` inputs. ``tensor``: the token ids travel
  as the payload (every rank runs the whole pass on its slices); ``pipeline``: the hidden state follows the
  header down the ring and the last rank sends it back to rank 0.
- ``JOIN`` sequences enter the batch (payload: serial, offset pairs), in that order, after its rows.
- ``LEAVE`` rows leave the batch (payload: row, serial pairs; serial 0 = forget it, else keep its cache as
  that new sequence: the prefix cache of a session).
- ``DROP`` forget these sequences' caches (rank 0 dropped its copies: evicted, cancelled, replaced).
- ``STOP`` the group ends (unload).

Headers go to every rank (``tensor``: an ``all_sum`` in which only rank 0 adds non-zeros; ``pipeline``:
rank by rank down the ring), so both modes share the ops and the cache bookkeeping
(:mod:`local_runtime.agent.shard_caches`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from isthmus_contracts.agent import ShardSpec

OP_FORWARD, OP_STOP, OP_JOIN, OP_LEAVE, OP_DROP = 1, 2, 3, 4, 5
HEADER_INTS = 8  # op, serial, rows, tokens, offset, dtype code, payload length, spare
DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Op:
    op: int
    serial: int = 0
    rows: int = 0
    tokens: int = 0
    offset: int = 0
    dtype: int = 0
    payload: tuple[int, ...] = ()

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.payload[::2], self.payload[1::2], strict=True))


class Wire:
    """One rank's end of the group's channel: rank 0 sends, the followers receive (and in ``pipeline`` mode
    pass each header on to the next rank)."""

    def __init__(self, spec: ShardSpec, group: Any) -> None:
        self.group = group
        self.rank, self.size = spec.rank, spec.size
        self.tensor = spec.mode == "tensor"
        self.last = self.rank == self.size - 1

    # ---- rank 0 --------------------------------------------------------------------------------------------

    def send(self, op: Op) -> None:
        import mlx.core as mx

        header = mx.array([op.op, op.serial, op.rows, op.tokens, op.offset, op.dtype, len(op.payload), 0],
                          dtype=mx.int32)
        parts = [header] if not op.payload else [header, mx.array(op.payload, dtype=mx.int32)]
        for part in parts:
            if self.tensor:
                mx.eval(mx.distributed.all_sum(part, group=self.group))
            else:
                mx.eval(mx.distributed.send(part, 1, group=self.group))

    def send_hidden(self, h: Any) -> Any:
        """``pipeline``: the hidden state after this rank's layers to the next rank; returns what comes back
        from the last rank (rank 0), or the send (a follower: nothing to wait for)."""
        import mlx.core as mx

        if self.rank == 0:
            mx.eval(mx.distributed.send(h, 1, group=self.group))
            back = mx.distributed.recv_like(h, self.size - 1, group=self.group)
            # Evaluated now: mlx-lm's prefill evaluates only the cache states, so a lazy recv of a pass whose
            # logits nobody reads would never run, and the next pass would read this one's hidden state.
            mx.eval(back)
            return back
        mx.eval(mx.distributed.send(h, (self.rank + 1) % self.size, group=self.group))
        return None

    # ---- followers -----------------------------------------------------------------------------------------

    def recv(self) -> Op:
        import mlx.core as mx

        header = self._receive(mx.zeros((HEADER_INTS,), dtype=mx.int32))
        values: list[int] = [int(v) for v in header.tolist()]
        op, serial, rows, tokens, offset, dtype, length, _ = values
        payload: tuple[int, ...] = ()
        if length:
            payload = tuple(int(v) for v in self._receive(mx.zeros((length,), dtype=mx.int32)).tolist())
        return Op(op, serial, rows, tokens, offset, dtype, payload)

    def recv_hidden(self, shape: tuple[int, ...], dtype_code: int) -> Any:
        import mlx.core as mx

        h = mx.distributed.recv(shape, getattr(mx, DTYPES[dtype_code]), self.rank - 1, group=self.group)
        mx.eval(h)
        return h

    def _receive(self, zeros: Any) -> Any:
        import mlx.core as mx

        if self.tensor:
            part = mx.distributed.all_sum(zeros, group=self.group)
            mx.eval(part)
            return part
        part = mx.distributed.recv(zeros.shape, zeros.dtype, self.rank - 1, group=self.group)
        mx.eval(part)
        if not self.last:  # pass it down the ring
            mx.eval(mx.distributed.send(part, self.rank + 1, group=self.group))
        return part

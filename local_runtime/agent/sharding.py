"""One model split across the agents of a pool with MLX distributed (``mx.distributed``; ring over TCP by
default, JACCL where the Macs have Thunderbolt RDMA). MLX is the transport: nothing here moves tensors
any other way.

Rank 0 is the agent that takes the pool's requests. It runs the ordinary engine on a *head* model whose
forward pass drives the other ranks; the other ranks (*followers*) run :func:`follow`, a loop that mirrors
every forward pass of rank 0 and owns nothing else (no tokenizer, no HTTP requests).

- ``pipeline``: each rank keeps only its layer range (rank 0 also the embedding, final norm and head). A
  forward pass on rank 0 sends a 6-int header and the hidden state to rank 1, which runs its layers and
  sends on; the last rank sends the hidden state back to rank 0 (a ring, so the ring backend's neighbour
  links carry all of it). mlx-lm 0.32 has no ``pipeline()`` for llama/qwen2/qwen3, so the split is ours.
- ``tensor``: every rank holds a slice of every layer (mlx-lm's ``shard()``, its all_sums inside the
  layers); rank 0 broadcasts the header and the input tokens with ``all_sum`` before each forward pass.

A follower keeps one KV cache, the one of rank 0's current sequence (the header names it by a serial);
so a sharded pool runs one sequence at a time, without the session prefix cache.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from isthmus_contracts.agent import ShardSpec

log = logging.getLogger("isthmus.agent.sharding")

OP_FORWARD, OP_STOP = 1, 2
HEADER_INTS = 6  # op, cache serial, tokens in this pass, cache offset before it, dtype code, spare
DTYPES = ("float32", "float16", "bfloat16")
PIPELINE_ARCHS = frozenset({"llama", "qwen2", "qwen3"})  # embed_tokens -> layers(h, mask, cache) -> norm


def init_group(spec: ShardSpec) -> Any:
    """Join the group (blocks until every rank has connected). mlx reads the hostfile and the rank from the
    environment at init; a new group per load, so each load writes its own hostfile."""
    import mlx.core as mx

    if spec.rank >= spec.size:
        raise ValueError(f"rank {spec.rank} is outside a group of {spec.size}")
    fd, path = tempfile.mkstemp(prefix="isthmus-hosts-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump([[h] for h in spec.hosts], f)
    os.environ["MLX_HOSTFILE"] = path
    os.environ["MLX_RANK"] = str(spec.rank)
    if spec.backend == "jaccl":  # rank 0's data address is the coordinator; the device matrix comes with the load
        if not spec.ibv_devices or len(spec.ibv_devices) != spec.size:
            raise ValueError(f"jaccl needs ibv_devices: a {spec.size}x{spec.size} matrix of RDMA device names")
        fd, devices = tempfile.mkstemp(prefix="isthmus-ibv-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(spec.ibv_devices, f)
        os.environ["MLX_IBV_DEVICES"] = devices
        os.environ["MLX_JACCL_COORDINATOR"] = spec.hosts[0]
    group = mx.distributed.init(backend=spec.backend, strict=True)
    if group.size() != spec.size:
        raise RuntimeError(f"the group has {group.size()} ranks, expected {spec.size}")
    return group


def _arrays(model: Any) -> list[Any]:
    from mlx.utils import tree_flatten

    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    return [v for _, v in flat]


def parameter_bytes(model: Any) -> int:
    """Bytes of the weights this process holds (what a sharded load divides)."""
    return sum(int(v.nbytes) for v in _arrays(model))


def layer_ranges(n_layers: int, size: int) -> list[tuple[int, int]]:
    """Contiguous layer ranges per rank, rank 0 first; the first ranks take the extra layers."""
    base, extra = divmod(n_layers, size)
    if base == 0:
        raise ValueError(f"{n_layers} layers cannot be split over {size} nodes")
    out, start = [], 0
    for r in range(size):
        n = base + (1 if r < extra else 0)
        out.append((start, start + n))
        start += n
    return out


def load_shard(path: str, spec: ShardSpec, group: Any) -> Any:
    """This rank's part of the model, weights evaluated (only this part is read from disk)."""
    import mlx.core as mx
    from mlx_lm.utils import load_model

    model, config = load_model(Path(path), lazy=True, strict=True)
    arch = str(config.get("model_type"))
    if spec.mode == "tensor":
        args = model.args
        heads, kv_heads = args.num_attention_heads, getattr(args, "num_key_value_heads", None) or 0
        if not hasattr(model, "shard") or heads % spec.size or kv_heads % spec.size:
            raise ValueError(f"tensor sharding needs attention heads divisible by {spec.size} nodes; "
                             f"'{arch}' has {heads} heads and {kv_heads} key/value heads")
        model.shard(group)
        mx.eval(model.parameters())
        return model
    if arch not in PIPELINE_ARCHS or any(getattr(layer, "use_sliding", False) for layer in model.model.layers):
        raise ValueError(f"pipeline sharding supports {', '.join(sorted(PIPELINE_ARCHS))} models without "
                         f"sliding-window layers, not '{arch}'")
    inner = model.model
    start, end = layer_ranges(len(inner.layers), spec.size)[spec.rank]
    inner.layers = inner.layers[start:end]  # the other layers' lazy weights are never read
    if spec.rank != 0:  # only rank 0 embeds, normalises and projects to the vocabulary
        inner.embed_tokens = None
        inner.norm = None
        if hasattr(model, "lm_head"):
            model.lm_head = None
    mx.eval(model.parameters())
    return model


class _Caches(list[Any]):
    """A KV cache list with a serial, so followers can tell a new sequence from the next step of one."""

    serial = 0


class ShardedHead:
    """Rank 0's model as mlx-lm's generation code sees it: ``model(inputs, cache=...)`` returns logits,
    and each call mirrors the forward pass on the followers first."""

    def __init__(self, model: Any, spec: ShardSpec, group: Any) -> None:
        self.model, self.spec, self.group = model, spec, group
        self.layers = model.model.layers  # mlx-lm reads .layers (e.g. to size caches)
        self._serials = itertools.count(1)
        self._dtype = DTYPES.index(str(_param_dtype(model)).rsplit(".", 1)[-1]) if spec.mode == "pipeline" else 0

    def make_cache(self) -> list[Any]:
        from mlx_lm.models.cache import make_prompt_cache

        caches = _Caches(make_prompt_cache(self.model))
        caches.serial = next(self._serials)
        return caches

    def _header(self, op: int, serial: int = 0, tokens: int = 0, offset: int = 0) -> Any:
        import mlx.core as mx

        return mx.array([op, serial, tokens, offset, self._dtype, 0], dtype=mx.int32)

    def __call__(self, inputs: Any, cache: Any = None, input_embeddings: Any = None) -> Any:
        import mlx.core as mx

        if cache is None or not isinstance(cache, _Caches):
            raise RuntimeError("a sharded model runs only on caches it made (make_cache)")
        if inputs.shape[0] != 1:
            raise RuntimeError("a sharded model runs one sequence at a time")
        header = self._header(OP_FORWARD, cache.serial, inputs.shape[1], int(cache[0].offset))
        if self.spec.mode == "tensor":
            mx.eval(mx.distributed.all_sum(header, group=self.group))
            mx.eval(mx.distributed.all_sum(inputs[0].astype(mx.int32), group=self.group))
            logits = self.model(inputs, cache=cache)
            mx.eval(logits)  # see below: every collective of the pass must run now, in order
            return logits
        from mlx_lm.models.base import create_attention_mask

        inner = self.model.model
        h = inner.embed_tokens(inputs)
        mask = create_attention_mask(h, cache[0])
        for layer, c in zip(inner.layers, cache, strict=True):
            h = layer(h, mask, cache=c)
        mx.eval(mx.distributed.send(header, 1, group=self.group))
        mx.eval(mx.distributed.send(h, 1, group=self.group))
        h = mx.distributed.recv_like(h, self.spec.size - 1, group=self.group)
        # Evaluated now: mlx-lm's prefill evaluates only the cache states, so a lazy recv of a pass whose
        # logits nobody reads would never run, and the next pass would read this one's hidden state.
        mx.eval(h)
        out = inner.norm(h)
        lm_head = getattr(self.model, "lm_head", None)
        return lm_head(out) if lm_head is not None else inner.embed_tokens.as_linear(out)

    def stop_followers(self) -> None:
        """End the followers' loops (at unload); best effort: a lost group has nobody to tell."""
        import mlx.core as mx

        header = self._header(OP_STOP)
        try:
            if self.spec.mode == "tensor":
                mx.eval(mx.distributed.all_sum(header, group=self.group))
            else:
                mx.eval(mx.distributed.send(header, 1, group=self.group))
        except RuntimeError as exc:
            log.warning("could not stop the followers: %s", exc)


def _param_dtype(model: Any) -> Any:
    return next(v.dtype for v in _arrays(model) if v.dtype in _float_dtypes())


def _float_dtypes() -> tuple[Any, ...]:
    import mlx.core as mx

    return (mx.float32, mx.float16, mx.bfloat16)


def follow(model: Any, spec: ShardSpec, group: Any) -> int:
    """A follower's loop: mirror rank 0's forward passes until it says stop (returns the passes run) or the
    group breaks (raises RuntimeError: a peer was lost)."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    hidden = model.args.hidden_size
    serial, cache, passes = -1, None, 0
    last = spec.rank == spec.size - 1
    while True:
        zeros = mx.zeros((HEADER_INTS,), dtype=mx.int32)
        if spec.mode == "tensor":
            header = mx.distributed.all_sum(zeros, group=group)
        else:
            header = mx.distributed.recv(zeros.shape, mx.int32, spec.rank - 1, group=group)
        mx.eval(header)
        values: list[Any] = header.tolist()  # type: ignore[assignment]
        op, seq, tokens, offset, dtype_code, _ = (int(x) for x in values)
        if spec.mode == "pipeline" and not last:
            mx.eval(mx.distributed.send(header, spec.rank + 1, group=group))  # pass it down the ring
        if op == OP_STOP:
            return passes
        if seq != serial or cache is None:
            serial, cache = seq, make_prompt_cache(model)
        held = int(cache[0].offset)
        if held > offset:  # rank 0 trimmed its cache (or made one step fewer): do the same
            trim_prompt_cache(cache, held - offset)
        elif held < offset:
            raise RuntimeError(f"follower cache holds {held} tokens, rank 0 holds {offset}")
        if spec.mode == "tensor":
            ids = mx.distributed.all_sum(mx.zeros((tokens,), dtype=mx.int32), group=group)
            mx.eval(model(ids[None], cache=cache))
        else:
            dtype = getattr(mx, DTYPES[dtype_code])
            h = mx.distributed.recv((1, tokens, hidden), dtype, spec.rank - 1, group=group)
            from mlx_lm.models.base import create_attention_mask

            mask = create_attention_mask(h, cache[0])
            for layer, c in zip(model.model.layers, cache, strict=True):
                h = layer(h, mask, cache=c)
            mx.eval(mx.distributed.send(h, (spec.rank + 1) % spec.size, group=group))
        passes += 1


def load_tokenizer(path: str) -> Any:
    """Rank 0's tokenizer, read the way ``mlx_lm.load`` reads it (the followers need none)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    config = json.loads((Path(path) / "config.json").read_text())
    return mlx_load_tokenizer(Path(path), eos_token_ids=config.get("eos_token_id"))

"""One model split across the agents of a pool with MLX distributed (``mx.distributed``; ring over TCP by
default, JACCL where the Macs have Thunderbolt RDMA). MLX is the transport: nothing here moves tensors
any other way.

Rank 0 is the agent that takes the pool's requests. It runs the ordinary engine (continuous batching, the
session prefix cache) on a *head* model (:mod:`local_runtime.agent.shard_head`) whose forward passes and
cache changes drive the other ranks; the other ranks (*followers*, :mod:`local_runtime.agent.shard_follower`)
mirror them and own nothing else (no tokenizer, no HTTP requests). The ops: :mod:`local_runtime.agent.shard_wire`.

- ``pipeline``: each rank keeps only its layer range (rank 0 also the embedding, final norm and head). A
  forward pass on rank 0 sends a header and the hidden state to rank 1, which runs its layers and sends on;
  the last rank sends the hidden state back to rank 0 (a ring, so the ring backend's neighbour links carry
  all of it). mlx-lm 0.32 has no ``pipeline()`` for llama/qwen2/qwen3, so the split is ours.
- ``tensor``: every rank holds a slice of every layer (mlx-lm's ``shard()``, its all_sums inside the
  layers); rank 0 broadcasts each op and the input tokens with ``all_sum``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from isthmus_contracts.agent import ShardSpec

log = logging.getLogger("isthmus.agent.sharding")

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


def load_tokenizer(path: str) -> Any:
    """Rank 0's tokenizer, read the way ``mlx_lm.load`` reads it (the followers need none)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    config = json.loads((Path(path) / "config.json").read_text())
    return mlx_load_tokenizer(Path(path), eos_token_ids=config.get("eos_token_id"))

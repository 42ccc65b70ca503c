"""One rank of a two-process sharded group on loopback, without the agent's HTTP side: the head runs the sharded
batch generator through a scenario and writes what came out; the follower mirrors it and writes its own
bookkeeping when rank 0 stops it. Used by tests/integration/test_sharded_batching.py.

    python -m tests.support.shard_pair --rank R --hosts 127.0.0.1:P0,127.0.0.1:P1 --mode pipeline \\
        --model DIR --out FILE
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from isthmus_contracts.agent import ShardSpec
from local_runtime.agent import sharding
from local_runtime.agent.shard_follower import follow
from local_runtime.agent.shard_head import ShardedHead
from local_runtime.agent.sharded_batch import ShardedBatchGenerator

TEXTS = ["The capital of France is", "Hi", "Once upon a time, in a small village by the sea, there lived"]
MAX_TOKENS = 12


@functools.cache
def whole_model(model_dir: str) -> Any:
    from mlx_lm import load

    return load(model_dir)[0]


def whole_model_greedy(model_dir: str, prompt: list[int], n: int) -> list[tuple[int, float]]:
    """The reference: the unsharded model, one sequence, mlx-lm's own generation loop: each token and its
    log-probability (which a cache out of step would change even where the greedy token stays the same)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    model = whole_model(model_dir)
    return [(int(t), float(lp[t])) for t, lp in generate_step(mx.array(prompt), model, max_tokens=n)]


def step(gen: ShardedBatchGenerator, out: dict[int, Any]) -> None:
    """One step of the generator; each sequence's (token, log-probability) pairs, its cache when done."""
    for r in gen.next()[1]:
        entry = out.setdefault(r.uid, {"tokens": [], "done": False})
        entry["tokens"].append((r.token, float(r.logprobs[r.token])))
        if r.finish_reason is not None:
            entry.update(done=True, reason=r.finish_reason, cache=r.prompt_cache, all_tokens=r.all_tokens)


def run_until_done(gen: ShardedBatchGenerator, uids: list[int], out: dict[int, Any]) -> None:
    while not all(u in out and out[u]["done"] for u in uids):
        step(gen, out)


def head_scenario(head: ShardedHead, model_dir: str) -> dict[str, Any]:
    tokenizer = sharding.load_tokenizer(model_dir)
    prompts = [tokenizer.encode(t) for t in TEXTS]
    more = tokenizer.encode(" And then", add_special_tokens=False)
    # eos tokens never stop these runs: every sequence makes MAX_TOKENS tokens, so the reference lines up
    gen = ShardedBatchGenerator(head, stop_tokens=set(), prefill_step_size=4)
    report: dict[str, Any] = {"reference": [whole_model_greedy(model_dir, p, MAX_TOKENS) for p in prompts]}
    # 1. three sequences at once
    out: dict[int, Any] = {}
    uids = gen.insert([list(p) for p in prompts], [MAX_TOKENS] * 3)
    run_until_done(gen, uids, out)
    report["together"] = [out[u]["tokens"] for u in uids]
    report["together_rows_peak"] = head.rows_peak
    # 2. a second sequence joins while the first decodes, a third is cancelled mid-way
    out2: dict[int, Any] = {}
    (first,) = gen.insert([list(prompts[0])], [MAX_TOKENS])
    for _ in range(5):
        step(gen, out2)
    second, doomed = gen.insert([list(prompts[1]), list(prompts[2])], [MAX_TOKENS, MAX_TOKENS])
    for _ in range(6):
        step(gen, out2)
    gen.remove([doomed])
    run_until_done(gen, [first, second], out2)
    report["staggered"] = [out2[first]["tokens"], out2[second]["tokens"]]
    # 3. the next turn of sequence 1 from its kept cache (the prefix cache's path): only the new tokens prefill
    kept = out[uids[0]]
    turn2 = [*kept["all_tokens"], kept["tokens"][-1][0], *more]
    report["turn2_reference"] = whole_model_greedy(model_dir, turn2, MAX_TOKENS)
    report["turn2_cached"] = len(kept["all_tokens"])
    out3: dict[int, Any] = {}
    (again,) = gen.insert([turn2[len(kept["all_tokens"]):]], [MAX_TOKENS], caches=[kept["cache"]],
                          all_tokens=[kept["all_tokens"]])
    run_until_done(gen, [again], out3)
    report["turn2"] = out3[again]["tokens"]
    # 4. a kept cache trimmed back (a divergent next turn), as the engine's prefix cache does it
    from mlx_lm.models.cache import trim_prompt_cache

    kept3 = out[uids[2]]
    cache, held = kept3["cache"], kept3["all_tokens"]
    trim_prompt_cache(cache, len(held) - 5)
    branch = [*held[:5], *more]
    out4: dict[int, Any] = {}
    (b,) = gen.insert([branch[5:]], [MAX_TOKENS], caches=[cache], all_tokens=[held[:5]])
    run_until_done(gen, [b], out4)
    report["branch"], report["branch_reference"] = out4[b]["tokens"], whole_model_greedy(model_dir, branch, MAX_TOKENS)
    report["rows_peak"] = head.rows_peak
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--mode", default="pipeline")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    spec = ShardSpec(mode=args.mode, rank=args.rank, hosts=args.hosts.split(","))
    group = sharding.init_group(spec)
    model = sharding.load_shard(args.model, spec, group)
    if args.rank:
        stats: dict[str, Any] = {}
        stats["passes"] = follow(model, spec, group, stats)
        Path(args.out).write_text(json.dumps(stats))
        return
    head = ShardedHead(model, spec, group)
    report = head_scenario(head, args.model)
    import gc

    gc.collect()  # every cache the scenario kept is gone now: the followers are told with the next op
    head.stop_followers()
    Path(args.out).write_text(json.dumps(report))


if __name__ == "__main__":
    main()

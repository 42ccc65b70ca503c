"""Continuous batching and the prefix cache on a sharded model: two real ranks (two processes, MLX's ring
backend on loopback), rank 0 running the sharded batch generator through tests/support/shard_pair.py's
scenario. Every sequence's greedy tokens must be the unsharded model's, token for token, whether it ran alone,
beside others, joined a running batch, continued from a kept cache or from a cache trimmed back; and the
follower must end holding no cache rank 0 let go of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from local_runtime.agent.models.tiny import build_tiny_model
from local_runtime.ddb import free_port
from tests.support.shard_pair import MAX_TOKENS

pytestmark = [pytest.mark.integration]


def run_pair(model: Path, mode: str, tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    hosts = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.support.shard_pair", "--rank", str(rank), "--hosts", hosts,
                               "--mode", mode, "--model", str(model), "--out", str(tmp / f"rank{rank}.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (1, 0)]
    try:
        outputs = [p.communicate(timeout=180)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs, strict=True):
        assert p.returncode == 0, out[-3000:]
    return json.loads((tmp / "rank0.json").read_text()), json.loads((tmp / "rank1.json").read_text())


def same(got: list[list[Any]], want: list[list[Any]]) -> bool:
    """The same tokens, each with the same log-probability (to float noise): a cache out of step would show
    there even where the greedy token does not change."""
    return len(got) == len(want) and all(
        [t for t, _ in g] == [t for t, _ in w] and all(abs(a - b) < 1e-3 for (_, a), (_, b) in zip(g, w, strict=True))
        for g, w in zip(got, want, strict=True))


def assert_like_one_node(head: dict[str, Any], follower: dict[str, Any]) -> None:
    reference = head["reference"]
    assert all(len(tokens) == MAX_TOKENS for tokens in reference)
    # three sequences decoded together, one forward pass for all three
    assert same(head["together"], reference), (head["together"], reference)
    assert head["together_rows_peak"] == 3
    # a sequence joining a running batch, beside one cancelled mid-way
    assert same(head["staggered"], reference[:2]), (head["staggered"], reference)
    # the next turn from the kept cache: only the new tokens prefilled, the answer the whole prompt's
    assert head["turn2_cached"] > 0
    assert same([head["turn2"]], [head["turn2_reference"]])
    # a cache trimmed back to a shared prefix, then a different continuation
    assert same([head["branch"]], [head["branch_reference"]])
    # and the follower mirrored every pass and dropped every cache rank 0 let go of
    assert follower["forward_passes"] == follower["passes"] > 0
    assert follower["sequences_held"] == 0


def test_pipeline_batches_and_reuses_prefixes_like_one_node(tmp_path: Path) -> None:
    # given a tiny llama-class model split by layers over two ranks
    model = build_tiny_model(tmp_path / "tiny", "llama", layers=8)
    # when rank 0 batches sequences, adds one mid-way, cancels one, continues one from its cache
    head, follower = run_pair(model, "pipeline", tmp_path)
    # then every answer is the unsharded model's, token for token
    assert_like_one_node(head, follower)


def test_tensor_batches_and_reuses_prefixes_like_one_node(tmp_path: Path) -> None:
    # given a tiny qwen2 (4 heads, 2 key/value heads) with every layer sliced over two ranks
    model = build_tiny_model(tmp_path / "tiny", "qwen2", layers=4)
    head, follower = run_pair(model, "tensor", tmp_path)
    assert_like_one_node(head, follower)

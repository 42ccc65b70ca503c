"""Sharded pools: one model split over N>1 agents of a cluster as one MLX distributed group.

The control plane picks the ranks (rank 0, the first node named or the first up node, is the node that takes
the pool's requests: the pool's ``nodes`` is just rank 0, its ``ranks`` all of them), asks each agent for a
free data port, and sends every rank the same host list with its own rank, all at once (each agent's group
init waits until every rank has joined). Unload stops rank 0 first: it tells the followers to stop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

from isthmus.control.models import Node, Pool, Snapshot
from isthmus.errors import ApiError
from isthmus.ports.control import AgentPort

BACKENDS = ("ring", "jaccl")
SHARD_LOAD_TIMEOUT_S = 600.0  # a group waits for its slowest rank to read its weights
RESTART_WAIT_S = 60.0  # an agent whose group ended restarts itself (mlx keeps one group per process)


def backend_of(requested: str | None, ibv_devices: list[list[str | None]] | None, size: int) -> str:
    """The group's backend, checked before anything is unloaded or loaded."""
    backend = (requested or os.environ.get("ISTHMUS_SHARD_BACKEND") or "ring").lower()
    if backend not in BACKENDS:
        raise ApiError(400, f"unknown distributed backend '{backend}'; use one of {', '.join(BACKENDS)}",
                       param="backend")
    if backend == "jaccl" and (not ibv_devices or len(ibv_devices) != size
                               or any(len(row) != size for row in ibv_devices)):
        raise ApiError(400, f"the jaccl backend needs ibv_devices: the {size}x{size} matrix of RDMA devices "
                       "between the nodes in rank order (mlx.distributed_config --backend jaccl writes it)",
                       param="ibv_devices")
    return backend


def check_fit(nodes: list[Node], model: str, mode: str, ram_fraction: float) -> None:
    """Each node holds about 1/N of the weights (rank 0 a little more: embedding and head)."""
    share = 1 / len(nodes) if mode in ("pipeline", "tensor") else 1.0
    for node in nodes:
        size = node.model_size(model)
        if size and node.ram_bytes and size * share > node.ram_bytes * ram_fraction:
            raise ApiError(400, f"'{model}' ({size / 2**30:.1f} GiB, {mode} over {len(nodes)} nodes) does not fit "
                           f"node '{node.node_id}' ({node.ram_bytes / 2**30:.1f} GiB RAM).", code="model_too_large",
                           param="model")


async def _data_port(agents: AgentPort, node: Node) -> str:
    status, data = await agents.request("POST", node.base_url, "/agent/v1/shard/port", {}, timeout=10)
    if status != 200 or not isinstance(data, dict) or not isinstance(data.get("port"), int):
        raise ApiError(502, f"node '{node.node_id}' gave no data port for a sharded load (an older agent?)",
                       code="load_failed")
    return f"{urlsplit(node.base_url).hostname}:{data['port']}"


async def load_group(agents: AgentPort, nodes: list[Node], model: str, mode: str, backend: str,
                     ibv_devices: list[list[str | None]] | None = None) -> dict[str, Any]:
    """Load ``model`` over ``nodes`` (rank order); all ranks or none (a partial group is unloaded)."""
    await asyncio.gather(*(wait_fresh(agents, n) for n in nodes))
    hosts = list(await asyncio.gather(*(_data_port(agents, n) for n in nodes)))

    async def load(rank: int, node: Node) -> tuple[int, Any]:
        shard = {"mode": mode, "rank": rank, "hosts": hosts, "backend": backend, "ibv_devices": ibv_devices}
        return await agents.request("POST", node.base_url, "/agent/v1/load", {"model": model, "shard": shard},
                                    timeout=SHARD_LOAD_TIMEOUT_S)

    results = await asyncio.gather(*(load(r, n) for r, n in enumerate(nodes)), return_exceptions=True)
    failed: dict[str, str] = {}
    for node, result in zip(nodes, results, strict=True):
        if isinstance(result, BaseException):
            failed[node.node_id] = getattr(result, "message", type(result).__name__)
        elif result[0] != 200:
            failed[node.node_id] = _detail(result[1])
    if failed:
        await unload_group(agents, nodes)
        reasons = "; ".join(f"{nid}: {why}" for nid, why in failed.items())
        status = 400 if any("sharding" in why for why in failed.values()) else 502
        raise ApiError(status, f"{mode} load of '{model}' over {len(nodes)} nodes failed on {reasons}",
                       code="load_failed", param="sharding")
    param_bytes = {}
    for node, result in zip(nodes, results, strict=True):
        body = result[1] if isinstance(result, tuple) and isinstance(result[1], dict) else {}
        param_bytes[node.node_id] = (body.get("shard") or {}).get("param_bytes")
    return {"ranks": [n.node_id for n in nodes], "hosts": hosts, "backend": backend, "param_bytes": param_bytes}


async def unload_group(agents: AgentPort, nodes: list[Node]) -> dict[str, str]:
    """Rank 0 first (it stops the followers' loops), then the others; errors by node, never raised."""
    errors: dict[str, str] = {}
    for batch in (nodes[:1], nodes[1:]):
        results = await asyncio.gather(*(agents.unload(n.base_url) for n in batch), return_exceptions=True)
        errors.update({n.node_id: getattr(r, "message", type(r).__name__)
                       for n, r in zip(batch, results, strict=True) if isinstance(r, BaseException)})
    waits = await asyncio.gather(*(wait_fresh(agents, n) for n in nodes if n.node_id not in errors),
                                 return_exceptions=True)
    errors.update({e.param or "": e.message for e in waits if isinstance(e, ApiError)})
    return errors


async def wait_fresh(agents: AgentPort, node: Node) -> None:
    """Until the node's agent answers from a process that can join a group: one whose last group has ended
    restarts itself (a few seconds without an answer) before it can."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESTART_WAIT_S
    while True:
        try:
            status = await agents.status(node.base_url)
            if not status.get("restarting"):
                return
        except ApiError:
            pass  # between the old process and the new one
        if loop.time() > deadline:
            raise ApiError(503, f"node '{node.node_id}' did not come back from its restart after leaving its "
                           "distributed group", code="node_restarting", param=node.node_id,
                           headers={"Retry-After": "5"})
        await asyncio.sleep(0.25)


def _detail(data: Any) -> str:
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        return str(data.get("detail") or data.get("message") or data)[:300]
    return str(data)[:300]


def view(pool: Pool, snap: Snapshot, up: set[str]) -> dict[str, Any]:
    """What /admin/clusters shows of a sharded pool: the node of each rank, and why it is degraded."""
    by_id = {n.node_id: n for n in snap.nodes}
    reasons = [f"node '{nid}' (rank {r}) is down" for r, nid in enumerate(pool.ranks) if nid not in up]
    head = by_id.get(pool.ranks[0]) if pool.ranks else None
    if head is not None and head.load.shard_error:
        reasons.append(f"rank 0 ('{head.node_id}'): {head.load.shard_error}")
    return {"ranks": [{"rank": r, "node_id": nid, "up": nid in up} for r, nid in enumerate(pool.ranks)],
            "degraded": "; ".join(reasons) or None}

"""Model loads as jobs: ``POST /admin/clusters/{id}/load`` with ``"wait": false`` answers 202 at once with a job
whose progress (layers and bytes materialized, per node and in all) is read back while the agents load.

Each agent loads in the background (``/agent/v1/load`` with ``wait: false``) and reports its progress in
``/agent/v1/status`` (``load_progress``). The control plane keeps one record per job in the settings table
(``load_job#<id>``) and refreshes it from the agents whenever it is read; once no node is still loading, the
same read records the pool (exactly as the blocking load does) and releases the cluster's load hold. A
long-running process (the edge) also watches its own jobs, so a pool is recorded even if nobody polls; on
Lambda a sandbox may freeze, so there it is the next read that records it (the cluster stays held, as for a
blocking load, until then or until the hold's lease ends).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus import settings
from isthmus.control.models import Node, utcnow
from isthmus.errors import AgentUnreachable, ApiError
from isthmus.ports.control import AgentPort, ControlStore
from isthmus.services.control.clusters import LOAD_LEASE, ClusterService, LoadBody, LoadPlan, nodes_unreachable

_PREFIX = "load_job#"
_TERMINAL = ("done", "failed")
WATCH_INTERVAL_S = 0.5
_COUNTS = ("layers_done", "layers_total", "bytes_done", "bytes_total")
_watchers: set[asyncio.Task[None]] = set()  # strong references: a bare create_task may be collected
# One refresh of a job at a time in this process (the watcher and the readers), so a job is finished, and its
# cluster's hold released, once: a second finish could release the hold of a load started since.
_refreshing: dict[str, asyncio.Lock] = {}


class LoadJobService:
    def __init__(self, store: ControlStore, agents: AgentPort, clusters: ClusterService) -> None:
        self.store = store
        self.agents = agents
        self.clusters = clusters

    async def start(self, cluster_id: str, body: LoadBody) -> dict[str, Any]:
        plan = await self.clusters.prepare_load(cluster_id, body)
        if plan.group:  # a group loads all ranks together or none: one blocking call (load_group), no job form
            await self.clusters.release_load(cluster_id)
            raise ApiError(400, "a sharded load answers when every rank has loaded: send it with wait=true",
                           param="wait", code="invalid_value")
        try:
            await self.clusters.leave_groups(plan)
            answers = await asyncio.gather(*(self._start_on(n, body.model) for n in plan.nodes))
        except BaseException:
            await self.clusters.release_load(cluster_id)
            raise
        nodes = [{"node_id": n.node_id, "base_url": n.base_url, "state": "loading" if err is None else "failed",
                  "error": err.message if err else None, **dict.fromkeys(_COUNTS, 0)}
                 for n, err in zip(plan.nodes, answers, strict=True)]
        if all(n["state"] == "failed" for n in nodes):
            await self.clusters.release_load(cluster_id)
            if all(isinstance(err, AgentUnreachable) for err in answers):
                raise nodes_unreachable(cluster_id, {str(n["node_id"]): str(n["error"]) for n in nodes})
            reasons = "; ".join(f"{n['node_id']}: {n['error']}" for n in nodes)
            raise ApiError(502, f"load of '{body.model}' failed on {reasons}", code="load_failed")
        record = {"id": f"load-{uuid.uuid4().hex[:12]}", "cluster": cluster_id, "alias": plan.alias,
                  "model": plan.model, "mode": plan.mode, "ttl_seconds": plan.ttl_seconds, "state": "running",
                  "created_at": utcnow().isoformat(), "nodes": nodes, **_totals(nodes), "percent": 0.0}
        try:
            await run_in_threadpool(self.store.put_doc, _PREFIX + record["id"], record)
        except BaseException:  # no record, no job: the cluster is not left held for the lease's length
            await self.clusters.release_load(cluster_id)
            raise
        if not settings.in_lambda():
            task = asyncio.create_task(self._watch(record["id"]))
            _watchers.add(task)
            task.add_done_callback(_watchers.discard)
        return record

    async def _start_on(self, node: Node, model: str) -> ApiError | None:
        """None when the agent took the load, else why not (an AgentUnreachable when it could not be reached)."""
        try:
            status, data = await self.agents.request("POST", node.base_url, "/agent/v1/load",
                                                     {"model": model, "wait": False})
        except ApiError as exc:
            return exc
        if status >= 400:
            detail = data.get("detail") or data.get("error") if isinstance(data, dict) else data
            return ApiError(502, f"agent answered {status}: {detail}", code="load_failed")
        return None

    async def _watch(self, job_id: str) -> None:
        deadline = asyncio.get_running_loop().time() + LOAD_LEASE.total_seconds()
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(WATCH_INTERVAL_S)
            with contextlib.suppress(Exception):  # a store or agent hiccup: the next round (or a read) retries
                record = await run_in_threadpool(self.store.get_doc, _PREFIX + job_id)
                if record is None or (await self._refresh(record))["state"] in _TERMINAL:
                    return

    async def _node_progress(self, node: dict[str, Any], model: str) -> dict[str, Any]:
        if node["state"] in _TERMINAL:
            return node
        try:
            status = await self.agents.status(node["base_url"])
        except ApiError:
            return {**node, "reachable": False}
        progress = status.get("load_progress") or {}
        if progress.get("model") != model:
            if status.get("loading"):  # still busy with an earlier load: ours comes next
                return {**node, "reachable": True}
            if status.get("loaded") and status.get("model") == model:  # an agent that reports no progress
                return {**node, "reachable": True, "state": "done"}
            # not loading and no record of ours: the agent restarted (or another load replaced ours)
            return {**node, "reachable": True, "state": "failed",
                    "error": "the agent is not loading this model any more (restarted, or another load replaced it)"}
        counts = {k: int(progress.get(k) or 0) for k in _COUNTS}
        state = {"done": "done", "failed": "failed"}.get(str(progress.get("state")), "loading")
        return {**node, **counts, "reachable": True, "state": state, "phase": progress.get("phase"),
                "error": progress.get("error"), "load_s": progress.get("load_s")}

    async def _refresh(self, record: dict[str, Any]) -> dict[str, Any]:
        if record.get("state") in _TERMINAL:
            return record
        lock = _refreshing.setdefault(record["id"], asyncio.Lock())
        async with lock:
            stored = await run_in_threadpool(self.store.get_doc, _PREFIX + record["id"])
            if stored is not None and stored.get("state") in _TERMINAL:  # finished while this one waited
                _refreshing.pop(record["id"], None)
                return dict(stored)
            updated = await self._refresh_now(stored or record)
            if updated["state"] in _TERMINAL:
                _refreshing.pop(record["id"], None)
            return updated

    async def _refresh_now(self, record: dict[str, Any]) -> dict[str, Any]:
        nodes = list(await asyncio.gather(*(self._node_progress(n, record["model"]) for n in record["nodes"])))
        updated = {**record, "nodes": nodes, **_totals(nodes)}
        if all(n["state"] in _TERMINAL for n in nodes):
            updated = await self._finish(updated)
        await run_in_threadpool(self.store.put_doc, _PREFIX + record["id"], updated)
        return updated

    async def _finish(self, record: dict[str, Any]) -> dict[str, Any]:
        loaded = [n for n in record["nodes"] if n["state"] == "done"]
        plan = LoadPlan(cluster_id=record["cluster"], alias=record["alias"], model=record["model"],
                        mode=record["mode"], nodes=[], ttl_seconds=record.get("ttl_seconds"))
        if not loaded:
            await self.clusters.release_load(record["cluster"])
            reasons = "; ".join(f"{n['node_id']}: {n.get('error')}" for n in record["nodes"])
            return {**record, "state": "failed", "error": f"load of '{record['model']}' failed on {reasons}",
                    "finished_at": utcnow().isoformat()}
        load_s = max(float(n.get("load_s") or 0) for n in loaded)
        await self.clusters.record_pool(plan, [n["node_id"] for n in loaded], round(load_s, 3))
        return {**record, "state": "done", "load_s": load_s, "percent": 100.0, "finished_at": utcnow().isoformat()}

    async def get(self, cluster_id: str, job_id: str) -> dict[str, Any]:
        record = await run_in_threadpool(self.store.get_doc, _PREFIX + job_id)
        if record is None or record.get("cluster") != cluster_id:
            raise ApiError(404, f"cluster '{cluster_id}' has no load job '{job_id}'.", code="not_found")
        return await self._refresh(record)

    async def list_all(self, cluster_id: str) -> list[dict[str, Any]]:
        records = [r for r in await run_in_threadpool(self.store.list_docs, _PREFIX) if r.get("cluster") == cluster_id]
        refreshed = await asyncio.gather(*(self._refresh(r) for r in records))
        return sorted(refreshed, key=lambda r: r.get("created_at", ""), reverse=True)


def _totals(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    totals = {k: sum(int(n.get(k) or 0) for n in nodes) for k in _COUNTS}
    # Bytes when the agents know them (the weights' size), else layers; a finished job is 100 whatever they said.
    done, total = ((totals["bytes_done"], totals["bytes_total"]) if totals["bytes_total"]
                   else (totals["layers_done"], totals["layers_total"]))
    percent = round(100.0 * done / total, 1) if total else 0.0
    if nodes and all(n["state"] == "done" for n in nodes):
        percent = 100.0
    return {**totals, "percent": percent}

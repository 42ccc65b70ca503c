"""Model sync between nodes: the control plane asks the source node's agent to push a model folder to
the target nodes (``/agent/v1/sync/*``, served by local_runtime/model_sync.py) and shows its progress.

The source agent runs the job (resumable chunks, sha256-verified); the control plane keeps a record per
job in the settings table (``sync_job#<id>``) with the last progress it saw, so a finished job stays
visible after the agent forgets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from typing import Any

from pydantic import Field
from starlette.concurrency import run_in_threadpool

from isthmus.control.models import NullsAsAbsent, Snapshot, utcnow
from isthmus.errors import ApiError
from isthmus.ports.control import AgentPort, ControlStore

_PREFIX = "sync_job#"


def _agent_token() -> str | None:
    """Agents' sync routes take the enrollment token (the secret the control plane and agents share)."""
    return os.environ.get("ISTHMUS_ENROLL_TOKEN") or None


class RsyncBody(NullsAsAbsent):
    model: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._\-]{1,200}$")
    source: str = Field(min_length=1)
    targets: list[str] = Field(min_length=1)


class SyncService:
    def __init__(self, store: ControlStore, agents: AgentPort) -> None:
        self.store = store
        self.agents = agents

    async def start(self, body: RsyncBody) -> dict[str, Any]:
        snap = await run_in_threadpool(lambda: Snapshot(nodes=self.store.list_nodes()))
        up = {n.node_id: n for n in snap.up_nodes()}
        wanted = [body.source, *body.targets]
        missing = [n for n in wanted if n not in up]
        if missing:
            raise ApiError(400, f"node(s) {', '.join(missing)} are not up.", param="targets")
        if body.source in body.targets:
            raise ApiError(400, "the source cannot be one of the targets", param="targets")
        job_id = f"sync-{uuid.uuid4().hex[:12]}"
        source = up[body.source]
        targets = [{"node_id": t, "base_url": up[t].base_url} for t in body.targets]
        status, data = await self.agents.request("POST", source.base_url, "/agent/v1/sync/push",
                                                 {"job_id": job_id, "model": body.model, "targets": targets},
                                                 api_key=_agent_token())
        if status >= 400:
            message = data.get("detail", data) if isinstance(data, dict) else data
            raise ApiError(404 if status == 404 else 502, f"source node '{body.source}' refused: {message}",
                           code="sync_refused")
        record = {"id": job_id, "model": body.model, "source": body.source, "source_url": source.base_url,
                  "targets": body.targets, "created_at": utcnow().isoformat(), "state": "running",
                  "bytes_done": 0, "bytes_total": data.get("bytes_total", 0) if isinstance(data, dict) else 0}
        await run_in_threadpool(self.store.put_doc, _PREFIX + job_id, record)
        return record

    async def _refresh(self, record: dict[str, Any]) -> dict[str, Any]:
        if record.get("state") in ("done", "failed", "cancelled"):
            return record
        try:
            status, live = await self.agents.request("GET", record["source_url"], f"/agent/v1/sync/jobs/{record['id']}",
                                                     api_key=_agent_token())
        except ApiError:
            return {**record, "reachable": False}
        if status != 200 or not isinstance(live, dict):
            return {**record, "reachable": True, "state": record.get("state", "unknown")}
        updated = {**record, **{k: v for k, v in live.items() if k not in ("id", "targets")}}
        await run_in_threadpool(self.store.put_doc, _PREFIX + record["id"], updated)
        return updated

    async def get(self, job_id: str) -> dict[str, Any]:
        record = await run_in_threadpool(self.store.get_doc, _PREFIX + job_id)
        if record is None:
            raise ApiError(404, f"sync job '{job_id}' does not exist.", code="not_found")
        return await self._refresh(record)

    async def list_all(self) -> list[dict[str, Any]]:
        records = await run_in_threadpool(self.store.list_docs, _PREFIX)
        refreshed = await asyncio.gather(*(self._refresh(r) for r in records))
        return sorted(refreshed, key=lambda r: r.get("created_at", ""), reverse=True)

    async def cancel(self, job_id: str) -> dict[str, Any]:
        record = await self.get(job_id)
        if record.get("state") in ("done", "failed", "cancelled"):
            return record
        with contextlib.suppress(ApiError):
            await self.agents.request("POST", record["source_url"], f"/agent/v1/sync/jobs/{job_id}/cancel", {},
                                      api_key=_agent_token())
        record = {**record, "state": "cancelled"}
        await run_in_threadpool(self.store.put_doc, _PREFIX + job_id, record)
        return record

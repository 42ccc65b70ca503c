"""The agent side of node enrollment: register with the control plane, then heartbeat.

The agent calls it with two lines::

    enrollment = Enrollment(control_url, token, node_id, base_url, status_fn, cluster_id="default",
                            inventory_fn=list_models_on_disk)
    enrollment.start()          # registers (retrying until the control plane answers), then heartbeats
    ...
    enrollment.stop()           # on shutdown

or ``Enrollment.from_env(node_id, base_url, status_fn, inventory_fn=...)`` (None without ISTHMUS_CONTROL_URL).

``status_fn()`` returns the agent's :class:`AgentStatus` (or a dict of it); ``inventory_fn()`` the models
on disk (``ModelOnDisk`` or dicts). Heartbeats carry load, busy/idle, the loaded model (or the one loading:
the agent heartbeats while it loads, so its pool answers 503 ``model_loading`` rather than "no node") and
cache stats; if the control plane answers 404 (it forgot the node), the next beat enrolls again. Once a model
has finished loading, the next beat is an enrollment again: enrollment is where a node joins (or forms) the
pool of its loaded model. The enrollment token
is sent as ``Authorization: Bearer`` and never logged.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from isthmus_contracts.agent import AgentStatus
from isthmus_contracts.control import EnrollRequest, HeartbeatRequest, ModelOnDisk, NodeLoad

log = logging.getLogger("isthmus.enrollment")


def _status(value: Any) -> AgentStatus:
    return value if isinstance(value, AgentStatus) else AgentStatus.model_validate(value)


def _on_disk(item: Any) -> ModelOnDisk:
    """A ``ModelOnDisk``, a dict of one, or a ``(name, path, size_bytes)`` tuple (``isthmus model list``'s rows)."""
    if isinstance(item, ModelOnDisk):
        return item
    if isinstance(item, tuple | list):
        name, path, size = item
        from local_runtime.agent.embeddings.encoder import is_embedding_dir

        return ModelOnDisk(name=str(name), path=str(path), size_bytes=int(size),
                           embedding=True if is_embedding_dir(Path(path)) else None)
    return ModelOnDisk.model_validate(item)


def load_of(status: AgentStatus) -> NodeLoad:
    return NodeLoad(busy=status.busy, active=status.active, queue_depth=status.queue_depth,
                    loaded_model=status.model if status.loaded else None, loading_model=status.loading,
                    cache_entries=status.cache_entries, cache_bytes=status.cache_bytes, rss_bytes=status.rss_bytes,
                    shard_error=status.shard_error)


class Enrollment:
    def __init__(self, control_url: str, token: str | None, node_id: str, base_url: str,
                 status_fn: Callable[[], Any], *, cluster_id: str = "default",
                 inventory_fn: Callable[[], list[Any]] | None = None, chip: str | None = None,
                 interval: float | None = None, timeout: float = 5.0) -> None:
        self.control_url = control_url.rstrip("/")
        self.node_id = node_id
        self.base_url = base_url.rstrip("/")
        self.status_fn = status_fn
        self.inventory_fn = inventory_fn
        self.cluster_id = cluster_id
        self.chip = chip if chip is not None else (platform.processor() or platform.machine())
        self.interval = interval
        self.enrolled = False
        self.beats = 0
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(timeout=timeout)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_inventory: list[ModelOnDisk] | None = None
        self._enrolled_with: str | None = None  # the loaded model the last enrollment reported

    @classmethod
    def from_env(cls, node_id: str, base_url: str, status_fn: Callable[[], Any], **kwargs: Any) -> Enrollment | None:
        """An enrollment configured by ``ISTHMUS_CONTROL_URL`` (None when unset), ``ISTHMUS_ENROLL_TOKEN``,
        ``ISTHMUS_CLUSTER_ID`` (default ``default``), ``ISTHMUS_NODE_ID`` and ``ISTHMUS_AGENT_BASE_URL``
        (override ``node_id`` and ``base_url``: the URL other machines reach this agent at, when it binds
        0.0.0.0); ``isthmus dev`` sets the control URL."""
        control_url = os.environ.get("ISTHMUS_CONTROL_URL")
        if not control_url:
            return None
        kwargs.setdefault("cluster_id", os.environ.get("ISTHMUS_CLUSTER_ID") or "default")
        return cls(control_url, os.environ.get("ISTHMUS_ENROLL_TOKEN") or None,
                   os.environ.get("ISTHMUS_NODE_ID") or node_id,
                   os.environ.get("ISTHMUS_AGENT_BASE_URL") or base_url, status_fn, **kwargs)

    def _inventory(self) -> list[ModelOnDisk]:
        items = self.inventory_fn() if self.inventory_fn else []
        return [_on_disk(m) for m in items]

    def register(self) -> dict[str, Any]:
        """Enroll once; raises on failure (``start()`` retries)."""
        status = _status(self.status_fn())
        models = self._inventory()
        req = EnrollRequest(node_id=self.node_id, base_url=self.base_url, cluster_id=self.cluster_id, chip=self.chip,
                            ram_bytes=status.ram_total_bytes, platform=status.platform or platform.platform(),
                            models=models, load=load_of(status))
        resp = self._http.post(f"{self.control_url}/admin/nodes/enroll", json=req.model_dump(mode="json"),
                               headers=self._headers)
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        self._last_inventory = models
        self._enrolled_with = req.load.loaded_model
        self.enrolled = True
        if self.interval is None:
            self.interval = float(data.get("heartbeat_interval_s", 5.0))
        log.info("enrolled node %s in cluster %s at %s", self.node_id, self.cluster_id, self.control_url)
        return data

    def heartbeat(self) -> bool:
        """One beat; enrolls again when the control plane does not know the node. True when accepted."""
        if not self.enrolled:
            self.register()
            return True
        status = _status(self.status_fn())
        load = load_of(status)
        if load.loaded_model is not None and load.loaded_model != self._enrolled_with:
            self.register()  # a model finished loading: enrolling joins its pool
            return True
        models = self._inventory()
        changed = models if models != self._last_inventory else None
        body = HeartbeatRequest(**load.model_dump(), models=changed)
        resp = self._http.post(f"{self.control_url}/admin/nodes/{self.node_id}/heartbeat",
                               json=body.model_dump(mode="json"), headers=self._headers)
        if resp.status_code == 404:
            self.enrolled = False
            self.register()
            return True
        resp.raise_for_status()
        self._last_inventory = models
        self.beats += 1
        log.debug("heartbeat %d to %s accepted", self.beats, self.control_url)
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.heartbeat()
            except Exception as exc:  # the control plane may be down for a while: keep trying
                log.warning("heartbeat to %s failed: %s", self.control_url, type(exc).__name__)
            self._stop.wait(self.interval or 5.0)

    def start(self) -> Enrollment:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="isthmus-heartbeat", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._http.close()

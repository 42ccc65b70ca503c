"""One node agent as the only backend (ISTHMUS_DEFAULT_AGENT_URL, or single-Mac mode's own agent).

The model name must be the agent's loaded model (its name or path, case-insensitive) or ``default``;
anything else is a 404 listing what is ready, as the full router answers.
"""

from __future__ import annotations

import os
import time

from isthmus.adapters.agent_client import AgentClient
from isthmus.adapters.pool_backend import single_agent
from isthmus.background import SingleFlight
from isthmus.errors import ApiError
from isthmus.ports.backend import InferenceBackend
from isthmus_contracts.internal import InternalRequest

_STATUS_TTL_S = 2.0


def default_agent_url() -> str | None:
    return os.environ.get("ISTHMUS_DEFAULT_AGENT_URL") or None


class DefaultAgentResolver:
    def __init__(self, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._cached: tuple[float, str | None] | None = None
        self._refreshes = SingleFlight("agent status")

    @property
    def base_url(self) -> str:
        url = self._base_url or default_agent_url()
        if not url:
            raise ApiError(503, "No backend is configured: add a cluster (PUT /admin/clusters/{id}) or set "
                                "ISTHMUS_DEFAULT_AGENT_URL.", code="no_backend")
        return url

    async def _fetch(self) -> str | None:
        status = await AgentClient().status(self.base_url)
        model = status.get("model") if status.get("loaded") else None
        self._cached = (time.monotonic(), model)
        return model

    async def _refresh(self) -> None:
        try:
            await self._fetch()
        except Exception:  # the next request asks the agent itself and gets the error
            self._cached = None

    async def _loaded_model(self) -> str | None:
        """The agent's loaded model. A stale answer is served while one background call refreshes it: the
        status round trip stays off the request path except on the first request (or after a failure)."""
        if self._cached is None:
            return await self._fetch()
        at, model = self._cached
        if time.monotonic() - at >= _STATUS_TTL_S:
            self._refreshes.start("status", self._refresh())
        return model

    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[InferenceBackend, InternalRequest]:
        loaded = await self._loaded_model()
        if loaded is None:
            raise ApiError(503, "The node agent has no model loaded.", code="model_not_loaded")
        names = {loaded.lower(), loaded.rstrip("/").rsplit("/", 1)[-1].lower(), "default"}
        if request.model.lower() not in names:
            raise ApiError(404, f"Model '{request.model}' is not loaded. Ready models: default, {loaded}.",
                           code="model_not_loaded", param="model")
        return single_agent(self.base_url), request.model_copy(update={"model": loaded})

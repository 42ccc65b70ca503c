"""Until cluster routing is configured: every request goes to one node agent (ISTHMUS_DEFAULT_AGENT_URL).

The model name must be the agent's loaded model (its name or path, case-insensitive) or ``default``;
anything else is a 404 listing what is ready, as the full router answers.
"""

from __future__ import annotations

import os
import time

from isthmus.adapters.agent_backend import AgentBackend
from isthmus.errors import ApiError
from isthmus.ports.backend import InferenceBackend

_STATUS_TTL_S = 2.0


class DefaultAgentResolver:
    def __init__(self, base_url: str | None = None) -> None:
        self._base_url = base_url
        self._cached: tuple[float, str | None] = (0.0, None)

    @property
    def base_url(self) -> str:
        url = self._base_url or os.environ.get("ISTHMUS_DEFAULT_AGENT_URL")
        if not url:
            raise ApiError(503, "No backend is configured: set ISTHMUS_DEFAULT_AGENT_URL or add a cluster.",
                           code="no_backend")
        return url

    async def _loaded_model(self, backend: AgentBackend) -> str | None:
        at, model = self._cached
        if time.monotonic() - at < _STATUS_TTL_S:
            return model
        status = await backend.status()
        model = status.model if status.loaded else None
        self._cached = (time.monotonic(), model)
        return model

    async def resolve(self, model: str, *, session_id: str | None = None,
                      endpoint: str = "") -> tuple[InferenceBackend, str]:
        backend = AgentBackend(self.base_url)
        loaded = await self._loaded_model(backend)
        if loaded is None:
            raise ApiError(503, "The node agent has no model loaded.", code="model_not_loaded")
        names = {loaded.lower(), loaded.rstrip("/").rsplit("/", 1)[-1].lower(), "default"}
        if model.lower() not in names:
            raise ApiError(404, f"Model '{model}' is not loaded. Ready models: default, {loaded}.",
                           code="model_not_loaded", param="model")
        return backend, loaded

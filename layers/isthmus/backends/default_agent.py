"""One node agent as the only backend (ISTHMUS_DEFAULT_AGENT_URL, or single-Mac mode's own agent).

The model name must be the agent's loaded model (its name or path, case-insensitive) or ``default``;
anything else is a 404 listing what is ready, as the full router answers. While the agent loads (it answers
``/agent/v1/status`` with ``loading`` meanwhile), its model and ``default`` are a 503 ``model_loading`` with
Retry-After.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from isthmus.adapters.agent_client import AgentClient
from isthmus.adapters.agent_stream import first_byte_seconds
from isthmus.backends.pool import single_agent
from isthmus.background import SingleFlight
from isthmus.errors import AgentUnreachable, ApiError
from isthmus.ports.backend import InferenceBackend
from isthmus_contracts.internal import InternalRequest

_STATUS_TTL_S = 2.0


def default_agent_url() -> str | None:
    return os.environ.get("ISTHMUS_DEFAULT_AGENT_URL") or None


LOADING_RETRY_AFTER_S = "5"
UNREACHABLE_RETRY_AFTER_S = "2"


@dataclass(frozen=True)
class AgentModels:
    """What the agent said about its models: the one it serves, the one it is loading."""

    loaded: str | None
    loading: str | None


def _names(model: str) -> set[str]:
    return {model.lower(), model.rstrip("/").rsplit("/", 1)[-1].lower()}


class DefaultAgentResolver:
    def __init__(self, base_url: str | None = None, api_key: str | None = None) -> None:
        self._base_url = base_url
        self._api_key = api_key  # the agent's own key (single-Mac mode with --api-key): sent on every call
        self._cached: tuple[float, AgentModels] | None = None
        self._known: set[str] = set()  # every model name the agent has reported (to answer 404 while it is down)
        self._refreshes = SingleFlight("agent status")

    @property
    def base_url(self) -> str:
        url = self._base_url or default_agent_url()
        if not url:
            raise ApiError(503, "No backend is configured: add a cluster (PUT /admin/clusters/{id}) or set "
                                "ISTHMUS_DEFAULT_AGENT_URL.", code="no_backend")
        return url

    async def _fetch(self) -> AgentModels:
        status = await AgentClient(timeout=first_byte_seconds()).status(self.base_url, api_key=self._api_key)
        loaded = status.get("model") if status.get("loaded") else None
        models = AgentModels(loaded=loaded, loading=status.get("loading") or None)
        self._known |= {m for m in (models.loaded, models.loading) if m}
        self._cached = (time.monotonic(), models)
        return models

    async def _refresh(self) -> None:
        try:
            await self._fetch()
        except Exception:  # the next request asks the agent itself and gets the error
            self._cached = None

    async def _models(self) -> AgentModels:
        """The agent's models. A stale answer is served while one background call refreshes it: the status
        round trip stays off the request path except on the first request (or after a failure, or while the
        agent loads: then every request asks, so the first one after the load is served)."""
        if self._cached is None or self._cached[1].loaded is None:
            return await self._fetch()
        at, models = self._cached
        if time.monotonic() - at >= _STATUS_TTL_S:
            self._refreshes.start("status", self._refresh())
        return models

    def _not_served(self, requested: str, models: AgentModels) -> ApiError:
        ready = ", ".join(["default", models.loaded] if models.loaded else []) or "none"
        loading = f"; loading: {models.loading}" if models.loading else ""
        return ApiError(404, f"Model '{requested}' is not loaded. Ready models: {ready}{loading}.",
                        code="model_not_loaded", param="model")

    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[InferenceBackend, InternalRequest]:
        """The agent's loaded model (by name, path or ``default``); an unknown model is a 404 whatever the agent's
        state, a model it is loading a 503 ``model_loading`` + Retry-After, and an agent that does not answer a
        503 (a 404 for a name it never reported, once it has reported any)."""
        wanted = request.model.lower()
        try:
            models = await self._models()
        except AgentUnreachable as exc:
            if self._known and wanted != "default" and not any(wanted in _names(m) for m in self._known):
                raise self._not_served(request.model, AgentModels(None, None)) from None
            raise ApiError(503, f"{exc.message}; retry shortly.", code="agent_unavailable",
                           headers={"Retry-After": UNREACHABLE_RETRY_AFTER_S}) from None
        if models.loaded is not None and wanted in _names(models.loaded) | {"default"}:
            return single_agent(self.base_url, self._api_key), request.model_copy(update={"model": models.loaded})
        if models.loading is not None and wanted in _names(models.loading) | {"default"}:
            raise ApiError(503, f"Model '{models.loading}' is loading on the node agent; retry shortly.",
                           code="model_loading", param="model", headers={"Retry-After": LOADING_RETRY_AFTER_S})
        if models.loaded is None and models.loading is None and wanted == "default":
            raise ApiError(503, "The node agent has no model loaded.", code="model_not_loaded")
        raise self._not_served(request.model, models)

"""The gateway's control-plane BackendResolver: control-plane routing (clusters, pools, telemak, CoeOS) turned into a
backend; a model the control plane does not serve goes to the default node agent (ISTHMUS_DEFAULT_AGENT_URL)
when one is set, else it is the control plane's 404 listing the ready models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isthmus.adapters.cloud.protocols import backend_for
from isthmus.backends.default_agent import DefaultAgentResolver, default_agent_url
from isthmus.backends.pool import PoolBackend
from isthmus.errors import ApiError
from isthmus.ports.backend import InferenceBackend
from isthmus.ports.providers import ProviderTarget
from isthmus.routing.resolver import NodeTarget, Route
from isthmus.services.inference.routing import RoutingService, apply_route_defaults
from isthmus_contracts.internal import InternalRequest, Message, TextPart

if TYPE_CHECKING:
    from isthmus.backends.cloud import CloudResolver


def _last_user_text(request: InternalRequest) -> str:
    users = [m for m in request.messages if m.role == "user"]
    return users[-1].text() if users else ""


def _with_system_prefix(request: InternalRequest, prefix: str | None) -> InternalRequest:
    if not prefix:
        return request
    messages = list(request.messages)
    if messages and messages[0].role == "system":
        first = messages[0]
        messages[0] = first.model_copy(update={"content": [TextPart(text=prefix + "\n\n"), *first.content]})
    else:
        messages.insert(0, Message(role="system", content=[TextPart(text=prefix)]))
    return request.model_copy(update={"messages": messages})


class ControlPlaneResolver:
    """A :class:`~isthmus.ports.backend.BackendResolver` over the routing service's routes; ``cloud`` (set by the
    composition root, isthmus.wiring) serves a route that names a cloud alias."""

    def __init__(self, routing: RoutingService, fallback: DefaultAgentResolver | None = None,
                 cloud: CloudResolver | None = None) -> None:
        self.routing = routing
        self.fallback = fallback or DefaultAgentResolver()
        self.cloud = cloud

    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[InferenceBackend, InternalRequest]:
        dialect = "anthropic" if "/messages" in endpoint else "openai"
        try:
            route = await self.routing.route(request.model, dialect=dialect, session_id=request.session_id,
                                             axis_header=axis_header, last_user_message=_last_user_text(request))
        except ApiError as exc:
            # Not served by any cluster, or the control-plane store is down: the default agent, if any.
            if (exc.status == 404 or exc.code == "store_unavailable") and default_agent_url():
                return await self.fallback.resolve(request, endpoint=endpoint)
            raise
        routed = _with_system_prefix(apply_route_defaults(request, route), route.system_prefix)
        if route.backend == "cloud" and self.cloud is not None:  # a CoeOS pick or fallback alias naming one
            cloud = await self.cloud.backend(route.model)
            if cloud is not None:
                return cloud, routed
        return self._backend(route, request.session_id), routed

    def _backend(self, route: Route, session_id: str | None) -> InferenceBackend:
        if route.backend == "mlx":
            async def pin(target: NodeTarget) -> None:
                await self.routing.pin_session(session_id, route, target.node_id)

            return PoolBackend(route.nodes, name=f"mlx:{route.cluster}", on_served=pin)
        if route.backend == "telemak" and route.upstream_url and route.upstream_protocol == "openai":
            return _openai_upstream(route, route.upstream_url)
        if route.backend == "telemak" and route.upstream_url:
            # An Isthmus single-Mac agent (`isthmus agent --serve-api`) speaks the agent protocol too.
            target = NodeTarget(node_id=route.cluster or route.upstream_url, base_url=route.upstream_url,
                                api_key=route.upstream_api_key)
            return PoolBackend([target], name=f"telemak:{route.cluster}")
        raise ApiError(501, f"Model '{route.requested}' is served by a {route.backend} backend, which this "
                            "gateway cannot call yet.", code="backend_not_supported")


def _openai_upstream(route: Route, url: str) -> InferenceBackend:
    """A single-Mac upstream that speaks OpenAI's /v1/* (mlx_lm.server, LM Studio, Ollama, vLLM): the cloud
    OpenAI-protocol client, pointed at ``{url}/v1`` with the cluster's stored key as its Bearer. Like a cloud
    alias it has no tokenizer of ours, so its holds are bounded by the prompt's bytes."""
    base = url.rstrip("/")
    target = ProviderTarget(provider_id=f"telemak:{route.cluster}", protocol="openai",
                            api_base=base if base.endswith("/v1") else base + "/v1", alias=route.requested,
                            upstream_model=route.model, api_key=route.upstream_api_key)
    backend: InferenceBackend = backend_for(target)
    backend.name = f"telemak:{route.cluster}"  # the usage row names the cluster, as for an agent upstream
    return backend

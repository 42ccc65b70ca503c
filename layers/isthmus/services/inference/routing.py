"""The routing service the inference handler calls: snapshot -> CoeOS -> resolver -> node order.

    service = wiring.routing_service()                                   # isthmus.wiring builds it
    route = await service.route(model, dialect="openai", session_id=sid, axis_header=hdr, last_user_message=txt)
    request = apply_route_defaults(request, route)                       # concrete model, thinking/effort
    attempt = lambda t: open_stream(t.base_url, request)                # isthmus.adapters.agent_stream
    target, stream = await first_connecting(route.nodes, attempt)      # isthmus.backends.first_byte
    with tracker.track(target.node_id): ...                              # in-flight count while it streams
    await service.pin_session(sid, route, target.node_id)               # after the call went through
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus import settings
from isthmus.background import SingleFlight
from isthmus.control.models import Snapshot, stale_seconds, utcnow
from isthmus.errors import ApiError, store_failure
from isthmus.observability import get_logger
from isthmus.ports.control import CloudCatalog, ControlStore, Decider, NoCloudCatalog, SessionStore
from isthmus.routing import coeos
from isthmus.routing.affinity import NodeTracker, order_candidates, tracker
from isthmus.routing.resolver import Route, is_coeos, resolve, servable
from isthmus.services.control import pool_usage
from isthmus_contracts.internal import InternalRequest

SESSION_TTL_DEFAULT_S = 3600
DECISIONS_KEPT = 100
_decisions: deque[dict[str, Any]] = deque(maxlen=DECISIONS_KEPT)
logger = get_logger("routing")


def _cache_seconds() -> float:
    return settings.env_number("ISTHMUS_ROUTING_CACHE_SECONDS", 1.0)


class RoutingService:
    def __init__(self, store: ControlStore, sessions: SessionStore, decider: Decider | None = None,
                 catalog: CloudCatalog | None = None, nodes: NodeTracker = tracker,
                 cache_seconds: float | None = None) -> None:
        self.store = store
        self.sessions = sessions
        self.decider = decider
        self.catalog = catalog or NoCloudCatalog()
        self.nodes = nodes
        self.cache_seconds = _cache_seconds() if cache_seconds is None else cache_seconds
        self._cached: tuple[float, Snapshot] | None = None
        self._refreshes = SingleFlight("routing snapshot")

    async def snapshot(self) -> Snapshot:
        """Clusters, nodes, settings and cloud aliases, read concurrently; reused for ``cache_seconds``
        (``ISTHMUS_ROUTING_CACHE_SECONDS``, default 1) so a busy process does not re-read them per request.
        A stale snapshot is served once more while a refresh runs in the background (at most one at a time),
        but only while it is younger than :meth:`serve_stale_seconds`; an older one (after an idle spell, or a
        request that ran long) is read again before it is used, so one request waits on the store then.

        Node liveness is judged at the time the snapshot was read (``Snapshot.now``): its heartbeats are as old
        as the read, not as old as the idle spell before the next request (judging them against the current
        time made every node look down on the first request after ``ISTHMUS_NODE_STALE_SECONDS`` of idle).
        Serving it stale for at most ``serve_stale_seconds`` bounds how long a node that died just after the
        read can still look up."""
        now = time.monotonic()
        if self._cached is not None:
            age = now - self._cached[0]
            if age < self.cache_seconds:
                return self._cached[1]
            if age < self.serve_stale_seconds():
                self._refreshes.start("snapshot", self._read(background=True))
                return self._cached[1]
        return await self._read()

    def serve_stale_seconds(self) -> float:
        """How old a cached snapshot may be and still be served while it refreshes: a third of the node stale
        limit (one heartbeat interval), and never less than the cache time."""
        return max(self.cache_seconds, stale_seconds() / 3)

    async def _read(self, background: bool = False) -> Snapshot:
        now = time.monotonic()
        try:
            if background:  # one worker thread, one read after another: see _read_all
                clusters, nodes, settings, owners = await run_in_threadpool(self._read_all)
            else:
                clusters, nodes, settings, owners = await asyncio.gather(
                    run_in_threadpool(self.store.list_clusters), run_in_threadpool(self.store.list_nodes),
                    run_in_threadpool(self.store.get_settings), run_in_threadpool(self.catalog.owners))
        except Exception as exc:
            raise _store_error(exc) from None
        snap = Snapshot(clusters=clusters, nodes=nodes, settings=settings, cloud_aliases=sorted(owners),
                        cloud_owners=owners)
        if self.cache_seconds > 0:
            self._cached = (now, snap)
        return snap

    def _read_all(self) -> tuple[Any, Any, Any, Any]:
        """The background refresh reads in one thread: nothing waits on it, and four threads of botocore work
        at once hold the GIL in turns against the event loop (measured: the edge's p99 at c=1 is ~0.6 ms
        lower than with the four reads in parallel). The first read, which a request waits on, stays parallel."""
        return (self.store.list_clusters(), self.store.list_nodes(), self.store.get_settings(),
                self.catalog.owners())

    async def coeos_config(self) -> coeos.CoeosConfig:
        try:
            doc = await run_in_threadpool(self.store.get_doc, "coeos")
        except Exception as exc:
            raise _store_error(exc) from None
        return coeos.CoeosConfig.model_validate(doc or {})

    async def route(self, model: str, *, dialect: str = "openai", session_id: str | None = None,
                    axis_header: str | None = None, last_user_message: str = "",
                    snapshot: Snapshot | None = None) -> Route:
        snap = snapshot or await self.snapshot()
        if is_coeos(model):
            route = await self._coeos(snap, axis_header, last_user_message)
        else:
            route = resolve(snap, model, dialect=dialect)
            if route.enable_thinking is None and snap.settings.enable_thinking_default is not None:
                route = route.model_copy(update={"enable_thinking": snap.settings.enable_thinking_default})
        if snap.settings.system_prefix_text:
            route = route.model_copy(update={"system_prefix": snap.settings.system_prefix_text})
        if route.backend == "mlx":
            if route.cluster and route.alias:
                try:
                    await pool_usage.touch(self.store, route.cluster, route.alias)
                except Exception as exc:  # idle tracking is best effort; the request goes on
                    logger.warning("pool usage not recorded", extra={"error": type(exc).__name__})
            pinned = await self._session_node(session_id, route)
            route = route.model_copy(update={"nodes": order_candidates(snap, route.nodes, session_node=pinned,
                                                                       nodes=self.nodes)})
        return route

    async def _session_node(self, session_id: str | None, route: Route) -> str | None:
        if not session_id:
            return None
        pin = await run_in_threadpool(self.sessions.get, session_id, utcnow())
        if pin is None or pin[1] != route.cluster:
            return None
        return pin[0]

    async def pin_session(self, session_id: str | None, route: Route, node_id: str,
                          ttl_seconds: int = SESSION_TTL_DEFAULT_S) -> None:
        """Remember which node served the session (call once the backend accepted the request)."""
        if session_id and route.backend == "mlx" and route.cluster:
            await run_in_threadpool(self.sessions.put, session_id, node_id, route.cluster, ttl_seconds, utcnow())

    async def _coeos(self, snap: Snapshot, axis_header: str | None, last_user_message: str) -> Route:
        config = await self.coeos_config()
        if not config.enabled:
            raise ApiError(404, "CoeOS is not enabled on this gateway.", code="model_not_loaded", param="model")
        axis, source, answer = await self._pick_axis(snap, config, axis_header, last_user_message)
        model_id, model_source, score = coeos.pick_model(config, axis, lambda m: servable(snap, m))
        route = resolve(snap, model_id)
        thinking = axis.thinking if axis.thinking is not None else snap.settings.enable_thinking_default
        decision = coeos.Decision(at=utcnow(), axis=axis.key, axis_source=source, model=model_id,
                                  model_source=model_source, score=score, decider_answer=answer)
        await self._record(decision)
        return route.model_copy(update={"requested": coeos.COEOS_NAME, "via": "coeos", "coeos_axis": axis.key,
                                        "enable_thinking": thinking, "reasoning_effort": axis.reasoning_effort})

    async def _pick_axis(self, snap: Snapshot, config: coeos.CoeosConfig, header: str | None,
                         message: str) -> tuple[coeos.Axis, Any, str | None]:
        """(axis, how it was picked, what the decider model answered when it was asked)."""
        if header:
            axis = config.axis(header)
            if axis is None:
                keys = ", ".join(a.key for a in config.axes)
                raise ApiError(400, f"Unknown CoeOS axis '{header}' (axes: {keys}).", param=coeos.AXIS_HEADER,
                               code="invalid_value")
            return axis, "header", None
        if config.decider_model and self.decider is not None and servable(snap, config.decider_model):
            decider_route = resolve(snap, config.decider_model)
            try:
                answer = await self.decider.decide(decider_route.base_urls, decider_route.model,
                                                   coeos.decider_prompt(config, message))
            except Exception as exc:  # the decider is advisory: any failure means the default axis
                logger.warning("coeos decider failed", extra={"error": type(exc).__name__})
                answer = ""
            picked = coeos.parse_axis(config, answer)
            if picked is not None:
                return picked, "decider", answer
            return coeos.default_axis(config), "default", answer
        return coeos.default_axis(config), "default", None

    async def _record(self, decision: coeos.Decision) -> None:
        _decisions.append(decision.model_dump(mode="json"))
        try:
            await run_in_threadpool(self.store.put_doc, "coeos_decisions", list(_decisions)[-50:])
        except Exception as exc:  # the log is best effort; the request goes on
            logger.warning("coeos decision not stored", extra={"error": type(exc).__name__})


def _store_error(exc: Exception) -> Exception:
    """A store failure as the 503 + Retry-After the caller answers (never a 500, never an empty answer), judged
    by the one classifier credentials.call uses; anything else unchanged."""
    return store_failure(exc) or exc


def recent_decisions() -> list[dict[str, Any]]:
    return list(_decisions)


def apply_route_defaults(request: InternalRequest, route: Route) -> InternalRequest:
    """The request with the route's concrete model, and its thinking / effort defaults where the client
    set none (a client's explicit choice always wins)."""
    update: dict[str, Any] = {"model": route.model}
    if request.enable_thinking is None and route.enable_thinking is not None:
        update["enable_thinking"] = route.enable_thinking
    if request.reasoning_effort is None and route.reasoning_effort is not None:
        update["reasoning_effort"] = route.reasoning_effort
    return request.model_copy(update=update)

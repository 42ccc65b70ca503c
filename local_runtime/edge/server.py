"""The local edge: one ASGI app that routes like API Gateway and calls each function in-process.

Modes:
- ``asgi`` (default): the matched function's Starlette app gets the request directly; streams are real.
- ``lambda``: the request becomes an API Gateway v2 event for the function's Mangum handler (buffered).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from isthmus import limits, metrics
from isthmus.entry import LazyRoutes
from isthmus.errors import dialect_for_path
from local_runtime.edge.lambda_bridge import LambdaContext, build_event, decode_result
from local_runtime.edge.routes import RouteTable
from local_runtime.template import DEFAULT_TEMPLATE, FunctionSpec, functions_with_routes, load_template

# Set per function at deploy time; in one process each app names its own service instead.
_PER_FUNCTION_ENV = {"POWERTOOLS_SERVICE_NAME"}


@dataclass
class LoadedFunction:
    spec: FunctionSpec
    app: ASGIApp
    handler: Any


def apply_environment(specs: list[FunctionSpec]) -> None:
    """The template's environment, as defaults: a variable already set in the shell wins."""
    for spec in specs:
        for key, value in spec.environment.items():
            if key not in _PER_FUNCTION_ENV:
                os.environ.setdefault(key, value)


def load_functions(template_path: str | Path = DEFAULT_TEMPLATE) -> tuple[RouteTable[LoadedFunction], int]:
    specs = functions_with_routes(load_template(str(template_path)))
    apply_environment(specs)
    table: RouteTable[LoadedFunction] = RouteTable()
    for spec in specs:
        module = importlib.import_module(spec.module)
        if isinstance(module.app, LazyRoutes):  # a long-running server imports the routes now, not on a request
            module.app.load()
        loaded = LoadedFunction(spec, module.app, getattr(module, spec.handler_attr))
        for route in spec.routes:
            table.add(route.method, route.path, loaded)
    return table, len(specs)


class Edge:
    def __init__(self, table: RouteTable[LoadedFunction], mode: str = "asgi") -> None:
        if mode not in ("asgi", "lambda"):
            raise ValueError(f"unknown edge mode {mode!r}")
        self.table = table
        self.mode = mode
        if mode == "lambda":
            os.environ["ISTHMUS_RUNTIME"] = "lambda"  # services behave as in a Lambda sandbox (isthmus.settings)
        # Mangum drives its own event loop per invoke (asyncio.get_event_loop()), so each worker
        # thread gets one, as a Lambda sandbox's main thread has.
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="lambda",
                                        initializer=lambda: asyncio.set_event_loop(asyncio.new_event_loop()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":  # this process's Prometheus metrics (in Lambda they are EMF lines instead)
            payload, content_type = metrics.render()
            await _send(send, 200, [("content-type", content_type)], payload)
            return
        found = self.table.match(scope["method"], scope["path"])
        if found is None:  # the template has a catch-all, so this is API Gateway's own answer
            await _send(send, 404, [("content-type", "application/json")], b'{"message":"Not Found"}')
            return
        route, params = found
        if self.mode == "asgi":
            await route.target.app(scope, receive, send)
        else:
            await self._invoke_lambda(scope, receive, send, route.target, route.route_key, params)

    async def _invoke_lambda(self, scope: Scope, receive: Receive, send: Send, fn: LoadedFunction,
                             route_key: str, params: dict[str, str]) -> None:
        body = await _bounded_body(scope, receive)
        if body is None:  # over the route's limit: refused as API Gateway refuses an oversized payload
            limit = limits.body_limit(scope["path"])
            err = limits.too_large(limit, scope["path"])
            payload = json.dumps(err.body(dialect_for_path(scope["path"]))).encode()
            await _send(send, 413, [("content-type", "application/json")], payload)
            return
        request_id = str(uuid.uuid4())
        event = build_event(
            method=scope["method"], path=scope["path"], raw_query=scope.get("query_string", b"").decode("latin-1"),
            headers=scope.get("headers", []), body=bytes(body), route_key=route_key, path_params=params,
            source_ip=(scope.get("client") or ("127.0.0.1", 0))[0], request_id=request_id,
        )
        context = LambdaContext(function_name=fn.spec.logical_id, aws_request_id=request_id)
        result = await asyncio.get_running_loop().run_in_executor(self._pool, fn.handler, event, context)
        status, headers, payload = decode_result(result)
        await _send(send, status, headers, payload)


async def _bounded_body(scope: Scope, receive: Receive) -> bytes | None:
    """The whole body, or None as soon as it is known to exceed the route's limit (on Content-Length, before
    reading; else while reading): a Lambda event is built in memory, so nothing bigger is ever buffered."""
    limit = limits.body_limit(scope["path"])
    for name, value in scope.get("headers", []):
        if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
            return None
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return bytes(body)


async def _send(send: Send, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
    raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if not any(k == b"content-length" for k, _ in raw_headers):
        raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            from isthmus import settings, wiring

            # heartbeat (this process's holds and leases live while it does), sweep dead processes' holds,
            # replay spooled settlements; a lambda-mode edge plays sandboxes, which cannot heartbeat
            await wiring.start_hold_keeper(heartbeat=not settings.in_lambda())
            await wiring.start_batch_worker()  # runs batches in-process, resuming those a crash left unfinished
            # what the server loaded after _settle_process (uvicorn's protocols) and the background tasks made:
            # frozen too, before the first request
            gc.collect()
            gc.freeze()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            from isthmus import lifecycle

            await lifecycle.shutdown()  # queued settlements written, unused budget leases back, keeper stopped
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_edge(mode: str = "asgi", template: str | Path | None = None) -> Edge:
    table, _ = load_functions(template or DEFAULT_TEMPLATE)
    return Edge(table, mode)


def _settle_process() -> None:
    """Once per serving process, after everything is loaded."""
    # The event loop shares the GIL with store calls in worker threads (boto3 is CPU-heavy): a 1 ms switch
    # interval instead of 5 ms lets a request's next step run while a background batch is serialised.
    sys.setswitchinterval(0.001)
    # The store client and the deferred schemas made now, as a Lambda init makes them, so that they are frozen
    # below rather than made by the first requests.
    from isthmus import lambda_init

    lambda_init.prepare_store()
    lambda_init.build_deferred_schemas()
    # what the first cloud call imports (httpx, which brings its CLI's rich and pygments: ~15,000 objects) and
    # the providers' key cipher, loaded now to be frozen with the rest
    import httpx  # noqa: F401
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: F401
    # Everything loaded so far (every function's modules and models, the store client) lives as long as the
    # process: moved out of the collector's sight, a full collection no longer walks it in the middle of a
    # request (open mode, 2026-11-30: five full collections in 10 s at c=1 took 144 ms with the store client
    # made after the freeze, 8 ms with it frozen; ~70 us of CPU per request).
    gc.collect()
    gc.freeze()


def worker_app() -> Edge:
    """uvicorn's app factory in each worker process of ``--workers N`` (mode and template from the parent's
    environment). A worker is killed with its parent, however the parent dies: a SIGKILLed `isthmus edge` must not
    leave workers holding the port (`isthmus dev` relies on its children dying with it)."""
    _die_with_parent()
    edge = create_edge(os.environ.get(_MODE_ENV, "asgi"), os.environ.get(_TEMPLATE_ENV) or None)
    _settle_process()
    return edge


_MODE_ENV, _TEMPLATE_ENV = "ISTHMUS_EDGE_MODE", "ISTHMUS_EDGE_TEMPLATE"


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)


def run_edge(*, host: str, port: int, mode: str = "asgi", template: str | None = None, workers: int = 1) -> int:
    """Serve the edge. ``workers`` > 1: that many processes accept on one listening socket (uvicorn's
    supervisor restarts one that dies); each has its own budget leases, settlement batches, spool segment and
    hold-keeper heartbeat, as separate edges on one store always had."""
    import uvicorn

    options: dict[str, Any] = {
        "host": host, "port": port, "log_level": os.environ.get("ISTHMUS_EDGE_LOG_LEVEL", "warning"),
        "access_log": os.environ.get("ISTHMUS_EDGE_ACCESS_LOG", "") == "1", "timeout_graceful_shutdown": 5}
    if workers > 1:
        if mode not in ("asgi", "lambda"):
            raise ValueError(f"unknown edge mode {mode!r}")
        os.environ[_MODE_ENV] = mode
        os.environ[_TEMPLATE_ENV] = str(template or "")
        print(f"isthmus edge ({mode} mode, {workers} workers) on http://{host}:{port}", flush=True)
        uvicorn.run("local_runtime.edge.server:worker_app", factory=True, workers=workers, **options)
        return 0
    edge = create_edge(mode, template)
    _settle_process()
    print(f"isthmus edge ({mode} mode, {len(edge.table)} routes) on http://{host}:{port}", flush=True)
    uvicorn.run(edge, **options)
    return 0

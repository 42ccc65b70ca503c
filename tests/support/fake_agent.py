"""A deterministic node-agent *test double* for control-plane tests (never used outside tests).

A real uvicorn HTTP server on 127.0.0.1 speaking the agent protocol (``/agent/v1/*``, ``/health``) with
canned behaviour: load/unload flip the loaded model (loading ``fail-<node id>`` fails on that node);
generate answers ``[<node id>] <model>: <last user text>`` (NDJSON events when streamed; with
``--event-delay S`` one word per event, S seconds apart); with ``--load-seconds S`` the ``--model`` is
"loading" for S seconds after start, as the real agent reports it (status ``loading``, generate 503
``model_loading`` + Retry-After, /health 503); it enrolls
and heartbeats through local_runtime.enrollment and serves the model-sync routes from
local_runtime.model_sync, exactly as the real agent mounts them.

    python -m tests.support.fake_agent --node-id a --port 8101 --models-dir DIR [--control-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from isthmus_contracts.agent import AgentStatus
from isthmus_contracts.internal import InternalRequest
from local_runtime.enrollment import Enrollment
from local_runtime.model_sync import sync_routes


class FakeAgent:
    def __init__(self, node_id: str, models_dir: Path, model: str | None, ram_bytes: int) -> None:
        self.node_id = node_id
        self.models_dir = models_dir
        self.model = model
        self.ram_bytes = ram_bytes
        self.active = 0
        self.served = 0
        self.loading_until = 0.0  # monotonic time the scripted load ends

    def loading(self) -> str | None:
        return self.model if time.monotonic() < self.loading_until else None

    def status(self) -> AgentStatus:
        loading = self.loading()
        return AgentStatus(node_id=self.node_id, model=None if loading else self.model,
                           loaded=self.model is not None and not loading, loading=loading, busy=self.active > 0,
                           active=self.active, ram_total_bytes=self.ram_bytes,
                           platform="fake-agent")

    def inventory(self) -> list[dict[str, Any]]:
        out = []
        if self.models_dir.is_dir():
            for folder in sorted(p for p in self.models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
                out.append({"name": folder.name, "size_bytes": size, "path": str(folder), "context_length": 2048,
                            "quantization": "fp32", "supports_tools": True, "supports_vision": False})
        return out

    def reply(self, req: InternalRequest) -> str:
        last = next((m.text() for m in reversed(req.messages) if m.role == "user"), "")
        return f"[{self.node_id}] {self.model}: {last}"


def build_app(agent: FakeAgent, enrollment: Enrollment | None) -> Starlette:
    async def health(request: Request) -> Response:
        if agent.loading():
            return JSONResponse({"status": "loading", "model": agent.model, "loaded": False}, status_code=503)
        return JSONResponse({"status": "busy" if agent.active else "idle", "model": agent.model,
                             "loaded": agent.model is not None})

    async def status(request: Request) -> Response:
        return JSONResponse(agent.status().model_dump())

    async def load(request: Request) -> Response:
        model = (await request.json())["model"]
        if model == f"fail-{agent.node_id}":  # a scripted failure for partial-load tests
            return JSONResponse({"detail": f"cannot load {model}"}, status_code=500)
        agent.model = model
        return JSONResponse({"loaded": True, "model": agent.model, "node_id": agent.node_id})

    async def unload(request: Request) -> Response:
        agent.model = None
        return JSONResponse({"loaded": False, "node_id": agent.node_id})

    async def tokenize(request: Request) -> Response:
        body = await request.json()
        words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        return JSONResponse({"prompt_tokens": words, "model": agent.model or ""})

    async def generate(request: Request) -> Response:
        req = InternalRequest.model_validate(await request.json())
        if agent.loading():
            return JSONResponse({"error": {"message": f"loading {agent.model}", "code": "model_loading"}},
                                status_code=503, headers={"Retry-After": "5"})
        if agent.model is None:
            return JSONResponse({"detail": "no model loaded"}, status_code=503)
        agent.served += 1
        text, rid, created = agent.reply(req), f"gen-{uuid.uuid4().hex[:8]}", int(time.time())
        usage = {"prompt_tokens": 3, "completion_tokens": len(text.split()),
                 "cached_tokens": 0 if req.session_id else None}
        if not req.stream:
            return JSONResponse({"id": rid, "model": agent.model, "created": created, "finish_reason": "stop",
                                 "content": [{"type": "text", "text": text}], "usage": usage})

        delay = float(_args().event_delay)
        texts = [w + " " for w in text.split(" ")] if delay else [text]

        async def events() -> AsyncIterator[bytes]:
            start = {"type": "start", "id": rid, "model": agent.model, "created": created, "prompt_tokens": 3}
            for i, event in enumerate((start, *({"type": "text", "text": t} for t in texts),
                                       {"type": "usage", "usage": usage}, {"type": "finish", "reason": "stop"})):
                if delay and i:  # a pause before every event but the first; the stream ends with its last
                    await asyncio.sleep(delay)
                yield (json.dumps(event) + "\n").encode()

        return StreamingResponse(events(), media_type="application/x-ndjson")

    async def openai_models(request: Request) -> Response:  # lets the agent stand in for a telemak upstream
        data = [{"id": agent.model, "object": "model", "created": 0, "owned_by": "fake"}] if agent.model else []
        return JSONResponse({"object": "list", "data": data})

    async def served(request: Request) -> Response:
        return JSONResponse({"served": agent.served, "enrolled": bool(enrollment and enrollment.enrolled)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if enrollment is not None:
            enrollment.start()
        yield
        if enrollment is not None:
            await asyncio.to_thread(enrollment.stop)

    return Starlette(routes=[
        Route("/health", health, methods=["GET"]),
        Route("/agent/v1/status", status, methods=["GET"]),
        Route("/agent/v1/load", load, methods=["POST"]),
        Route("/agent/v1/unload", unload, methods=["POST"]),
        Route("/agent/v1/tokenize", tokenize, methods=["POST"]),
        Route("/agent/v1/generate", generate, methods=["POST"]),
        Route("/fake/served", served, methods=["GET"]),
        Route("/v1/models", openai_models, methods=["GET"]),
        *sync_routes(agent.models_dir, chunk_size=int(_args().chunk_bytes)),
    ], lifespan=lifespan)


_parsed: argparse.Namespace | None = None


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    global _parsed
    if _parsed is None:
        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--node-id", required=True)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--models-dir", required=True)
        p.add_argument("--model", default=None, help="loaded at start")
        p.add_argument("--control-url", default=None)
        p.add_argument("--token", default=None)
        p.add_argument("--cluster", default="default")
        p.add_argument("--ram-bytes", type=int, default=16 * 2**30)
        p.add_argument("--chunk-bytes", type=int, default=64 * 1024)
        p.add_argument("--event-delay", type=float, default=0.0, help="stream one word per event, this far apart")
        p.add_argument("--load-seconds", type=float, default=0.0, help="--model is loading this long after start")
        _parsed = p.parse_args(argv)
    return _parsed


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = _args(argv)
    models_dir = Path(args.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    agent = FakeAgent(args.node_id, models_dir, args.model, args.ram_bytes)
    agent.loading_until = time.monotonic() + args.load_seconds
    base_url = f"http://127.0.0.1:{args.port}"
    enrollment = None
    if args.control_url:
        enrollment = Enrollment(args.control_url, args.token, args.node_id, base_url, agent.status,
                                cluster_id=args.cluster, inventory_fn=agent.inventory, chip="fake")
    uvicorn.run(build_app(agent, enrollment), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

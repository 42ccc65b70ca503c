"""A deterministic node-agent-protocol upstream for benchmarks: fixed answers, no model, no sleeps.

Run: python bench/upstream.py PORT  (serves /agent/v1/generate, /agent/v1/status, /agent/v1/tokenize, /health)
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "bench-model"
WORDS = ["The", " capital", " of", " France", " is", " Paris", "."]


async def generate(request: Request) -> Response:
    body = json.loads(await request.body())
    created = int(time.time())
    usage = {"prompt_tokens": 12, "completion_tokens": len(WORDS),
             "cached_tokens": 0 if body.get("session_id") else None}
    if not body.get("stream"):
        return JSONResponse({"id": "bench-1", "model": MODEL, "created": created,
                             "content": [{"type": "text", "text": "".join(WORDS)}],
                             "finish_reason": "stop", "usage": usage})

    async def lines() -> AsyncIterator[str]:
        yield json.dumps({"type": "start", "id": "bench-1", "model": MODEL, "created": created,
                          "prompt_tokens": 12, "cached_tokens": usage["cached_tokens"]}) + "\n"
        for word in WORDS:
            yield json.dumps({"type": "text", "text": word}) + "\n"
        yield json.dumps({"type": "usage", "usage": usage}) + "\n"
        yield json.dumps({"type": "finish", "reason": "stop"}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def status(request: Request) -> Response:
    return JSONResponse({"node_id": "bench", "model": MODEL, "loaded": True, "busy": False})


async def tokenize(request: Request) -> Response:
    return JSONResponse({"prompt_tokens": 12, "model": MODEL})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "idle", "model": MODEL, "loaded": True})


app = Starlette(routes=[Route("/agent/v1/generate", generate, methods=["POST"]),
                        Route("/agent/v1/status", status), Route("/agent/v1/tokenize", tokenize, methods=["POST"]),
                        Route("/health", health)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)

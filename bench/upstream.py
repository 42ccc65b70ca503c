"""A deterministic upstream for benchmarks: fixed answers, no model, no sleeps. One process speaks the node-agent
protocol (``/agent/v1/...``), the OpenAI protocol (``/openai/v1/chat/completions``, ``/openai/v1/embeddings``) and
the Anthropic protocol (``/anthropic/v1/messages``), streaming included; answers are built once at import, so the
direct path costs as little as an upstream can.

Run: python bench/upstream.py PORT
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator, Iterable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "bench-model"
WORDS = ["The", " capital", " of", " France", " is", " Paris", "."]
CREATED = int(time.time())


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _agent_lines(cached: int | None) -> list[bytes]:
    usage = {"prompt_tokens": 12, "completion_tokens": len(WORDS), "cached_tokens": cached}
    return ([_json({"type": "start", "id": "bench-1", "model": MODEL, "created": CREATED, "prompt_tokens": 12,
                    "cached_tokens": cached}) + b"\n"]
            + [_json({"type": "text", "text": w}) + b"\n" for w in WORDS]
            + [_json({"type": "usage", "usage": usage}) + b"\n", _json({"type": "finish", "reason": "stop"}) + b"\n"])


AGENT_STREAM = {False: _agent_lines(None), True: _agent_lines(0)}
OPENAI_USAGE = {"prompt_tokens": 12, "completion_tokens": len(WORDS), "total_tokens": 12 + len(WORDS)}
OPENAI_WHOLE = _json({"id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": "up",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(WORDS)},
                                   "logprobs": None, "finish_reason": "stop"}], "usage": OPENAI_USAGE})


def _oa_chunk(delta: dict[str, object], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    data: dict[str, object] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED,
                               "model": "up", "choices": [] if usage else [{"index": 0, "delta": delta,
                                                                             "finish_reason": finish}]}
    if usage:
        data["usage"] = usage
    return b"data: " + _json(data) + b"\n\n"


OPENAI_STREAM = ([_oa_chunk({"role": "assistant", "content": ""})] + [_oa_chunk({"content": w}) for w in WORDS]
                 + [_oa_chunk({}, "stop")])
OPENAI_STREAM_USAGE = [_oa_chunk({}, usage=OPENAI_USAGE), b"data: [DONE]\n\n"]
EMBEDDING = _json({"object": "list", "model": "up", "data": [{"object": "embedding", "index": 0,
                                                               "embedding": [0.1, 0.2, 0.3]}],
                   "usage": {"prompt_tokens": 8, "total_tokens": 8}})
AN_USAGE = {"input_tokens": 12, "output_tokens": len(WORDS)}
ANTHROPIC_WHOLE = _json({"id": "msg_bench", "type": "message", "role": "assistant", "model": "up",
                         "content": [{"type": "text", "text": "".join(WORDS)}], "stop_reason": "end_turn",
                         "stop_sequence": None, "usage": AN_USAGE})


def _an_event(name: str, data: dict[str, object]) -> bytes:
    return f"event: {name}\ndata: ".encode() + _json({"type": name, **data}) + b"\n\n"


ANTHROPIC_STREAM = (
    [_an_event("message_start", {"message": {"id": "msg_bench", "type": "message", "role": "assistant", "model": "up",
                                             "content": [], "stop_reason": None, "stop_sequence": None,
                                             "usage": {"input_tokens": 12, "output_tokens": 1}}}),
     _an_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})]
    + [_an_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": w}}) for w in WORDS]
    + [_an_event("content_block_stop", {"index": 0}),
       _an_event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                   "usage": {"output_tokens": len(WORDS)}}),
       _an_event("message_stop", {})])


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:  # one write per chunk, as a model server sends them
        yield part


async def generate(request: Request) -> Response:
    body = json.loads(await request.body())
    cached = bool(body.get("session_id"))
    if not body.get("stream"):
        usage = {"prompt_tokens": 12, "completion_tokens": len(WORDS), "cached_tokens": 0 if cached else None}
        return JSONResponse({"id": "bench-1", "model": MODEL, "created": CREATED,
                             "content": [{"type": "text", "text": "".join(WORDS)}],
                             "finish_reason": "stop", "usage": usage})
    return StreamingResponse(_chunks(AGENT_STREAM[cached]), media_type="application/x-ndjson")


async def openai_chat(request: Request) -> Response:
    body = json.loads(await request.body())
    if not body.get("stream"):
        return Response(OPENAI_WHOLE, media_type="application/json")
    usage = (body.get("stream_options") or {}).get("include_usage")
    return StreamingResponse(_chunks(OPENAI_STREAM + (OPENAI_STREAM_USAGE if usage else OPENAI_STREAM_USAGE[1:])),
                             media_type="text/event-stream")


async def embeddings(request: Request) -> Response:
    await request.body()
    return Response(EMBEDDING, media_type="application/json")


async def anthropic_messages(request: Request) -> Response:
    body = json.loads(await request.body())
    if not body.get("stream"):
        return Response(ANTHROPIC_WHOLE, media_type="application/json")
    return StreamingResponse(_chunks(ANTHROPIC_STREAM), media_type="text/event-stream")


async def status(request: Request) -> Response:
    return JSONResponse({"node_id": "bench", "model": MODEL, "loaded": True, "busy": False})


async def tokenize(request: Request) -> Response:
    return JSONResponse({"prompt_tokens": 12, "model": MODEL})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "idle", "model": MODEL, "loaded": True})


app = Starlette(routes=[Route("/agent/v1/generate", generate, methods=["POST"]),
                        Route("/agent/v1/status", status), Route("/agent/v1/tokenize", tokenize, methods=["POST"]),
                        Route("/openai/v1/chat/completions", openai_chat, methods=["POST"]),
                        Route("/openai/v1/embeddings", embeddings, methods=["POST"]),
                        Route("/anthropic/v1/messages", anthropic_messages, methods=["POST"]),
                        Route("/health", health)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)

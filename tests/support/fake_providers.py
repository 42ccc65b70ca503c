"""Deterministic fake cloud providers for tests: a real uvicorn server on 127.0.0.1 (in a thread) that speaks
the OpenAI (``/openai/v1/...``) and the Anthropic (``/anthropic/v1/messages``) wire protocols, streaming
included. Never used outside tests.

Faults are scripted by the *upstream model name* (dash-separated tokens, so each test picks its own):
``e429x2`` the first 2 calls answer 429 (then normal), ``e500x1`` / ``e500x99`` likewise with 500,
``e401x9``, ``e400x9``, ``e404x9``; ``ra3`` sets ``Retry-After: 3`` on those errors (429s default to 0);
``slow2`` waits 2 s before the first byte; ``cut`` breaks the stream's connection after two deltas;
``stall2`` goes quiet for 2 s after two deltas; ``flood`` then sends 20 MiB of data lines that never end an event;
``linger5`` (OpenAI) keeps the stream open 5 s after ``[DONE]``;
``over5000`` reports 5000 prompt tokens more than it counted (a provider that bills more than was sent).
Every request is recorded (path, headers, JSON body, the client's port) for assertions; counts are per model name.
The batch APIs (OpenAI files + batches, Anthropic Message Batches) are tests/support/fake_provider_batches.py.

Answers: with tools and no tool result yet, a call of the first tool with ``{"city": "Paris"}``; after a
tool result, ``tool said: <result>``; otherwise ``echo: <last user text>``. Keys must start with ``sk-``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_provider_batches import FakeBatchApis
from tests.support.loopback_server import LoopbackServer


def put_providers(edge: str, providers: dict[str, dict[str, Any]]) -> None:
    """Each provider (id -> its admin body, pointing at a fake's bases) put through the edge's admin API."""
    for provider_id, body in providers.items():
        resp = httpx.put(f"{edge}/admin/providers/{provider_id}", json=body, timeout=30)
        assert resp.status_code == 200, resp.text


class Cut(Exception):
    """Raised inside a streaming body: uvicorn drops the connection mid-stream."""


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _over(model: str) -> int:
    over = re.search(r"(?:^|-)over(\d+)(?:-|$)", model)
    return int(over.group(1)) if over else 0


class FakeProviders(LoopbackServer):
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.calls: Counter[str] = Counter()
        routes = [Route("/anthropic/v1/messages", self.messages, methods=["POST"])]
        routes += [Route(f"/openai/v1{p}", self.openai, methods=["POST"])
                   for p in ("/chat/completions", "/embeddings", "/moderations", "/images/generations",
                             "/audio/speech", "/rerank")]
        routes.append(Route("/openai/v1/audio/transcriptions", self.transcriptions, methods=["POST"]))
        self.batch_apis = FakeBatchApis(self)  # OpenAI files + batches, Anthropic Message Batches
        routes += self.batch_apis.routes()
        super().__init__(routes, force_exit_on_stop=True)
        self.openai_base = f"{self.base}/openai/v1"
        self.anthropic_base = f"{self.base}/anthropic/v1"

    def count(self, model: str) -> int:
        return self.calls[model]

    def last(self, model: str) -> dict[str, Any]:
        return next(r for r in reversed(self.requests) if r["body"].get("model") == model)

    # ---- scripting -------------------------------------------------------------------------------------
    async def _fault(self, model: str, protocol: str) -> Response | None:
        self.calls[model] += 1
        n = self.calls[model]
        slow = re.search(r"(?:^|-)slow(\d+)(?:-|$)", model)
        if slow:
            await asyncio.sleep(float(slow.group(1)))
        retry_after = re.search(r"(?:^|-)ra(\d+)(?:-|$)", model)
        for status, times in re.findall(r"(?:^|-)e(\d{3})x(\d+)(?=-|$)", model):
            if n <= int(times):
                message = f"scripted {status} for {model}"
                body = ({"type": "error", "error": {"type": "api_error", "message": message}} if protocol == "anthropic"
                        else {"error": {"message": message, "type": "server_error", "code": None}})
                headers = ({"Retry-After": retry_after.group(1) if retry_after else "0"}
                           if status == "429" or retry_after else {})
                return JSONResponse(body, status_code=int(status), headers=headers)
        return None

    @staticmethod
    async def _mid_stream(model: str) -> None:
        if "cut" in model.split("-"):
            raise Cut("scripted cut")
        stall = re.search(r"(?:^|-)stall(\d+)(?:-|$)", model)
        if stall:
            await asyncio.sleep(float(stall.group(1)))

    @staticmethod
    def _flood(model: str) -> list[bytes]:
        """``flood``: 20 MiB of data lines without the blank line that would end their event."""
        return [b"data: " + b"x" * 65530 + b"\n"] * 320 if "flood" in model.split("-") else []

    @staticmethod
    def _answer(messages: list[dict[str, Any]], tools: list[Any], tool_name: str | None) -> tuple[str, str | None]:
        """(text, tool name to call or None)."""
        last = messages[-1] if messages else {}
        content = last.get("content")
        results = []
        if isinstance(content, list):
            results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
        if last.get("role") == "tool":
            return f"tool said: {content}", None
        if results:
            inner = results[0].get("content")
            return f"tool said: {inner if isinstance(inner, str) else json.dumps(inner)}", None
        if tools and tool_name:
            return "", tool_name
        if isinstance(content, list):
            content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
        return f"echo: {content}", None

    def _record(self, request: Request, body: dict[str, Any]) -> None:
        self.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body,
                              "peer": request.client.port if request.client else None})  # which connection

    # ---- OpenAI -----------------------------------------------------------------------------------------
    async def openai(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if not request.headers.get("authorization", "").startswith("Bearer sk-"):
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, status_code=401)
        model = body.get("model", "")
        fault = await self._fault(model, "openai")
        if fault is not None:
            return fault
        path = request.url.path.removeprefix("/openai/v1")
        if path == "/embeddings":
            return JSONResponse({"object": "list", "model": model, "data": [
                {"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": 2 + _over(model), "total_tokens": 2 + _over(model)}})
        if path == "/moderations":
            return JSONResponse({"id": "modr-1", "model": model, "results": [{"flagged": False}]})
        if path == "/images/generations":
            return JSONResponse({"created": 1, "data": [{"b64_json": "aW1n"}]})
        if path == "/audio/speech":
            return Response(b"ID3fake-mp3", media_type="audio/mpeg")
        if path == "/rerank":  # Jina's shape (Cohere's differs in usage only): documents by falling relevance
            documents = body.get("documents") or []
            ranked = sorted(range(len(documents)), key=lambda i: -len(set(str(documents[i]).split())
                                                                      & set(str(body.get("query")).split())))
            return JSONResponse({"model": model, "usage": {"total_tokens": 7 + _over(model)}, "results": [
                {"index": i, "relevance_score": 1.0 / (rank + 1)} for rank, i in enumerate(ranked)]})
        tools = body.get("tools") or []
        name = tools[0]["function"]["name"] if tools else None
        text, call = self._answer(body.get("messages") or [], tools, name)
        usage = {"prompt_tokens": sum(_words(json.dumps(m)) for m in body["messages"]) + _over(model),
                 "completion_tokens": _words(text or "call"), "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if call:
                message["tool_calls"] = [{"id": "call_fake1", "type": "function",
                                          "function": {"name": call, "arguments": '{"city": "Paris"}'}}]
            return JSONResponse({"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
                                 "model": model, "choices": [{"index": 0, "message": message, "logprobs": None,
                                                              "finish_reason": "tool_calls" if call else "stop"}],
                                 "usage": usage})
        return StreamingResponse(self._openai_stream(model, text, call, usage, body), media_type="text/event-stream")

    async def transcriptions(self, request: Request) -> Response:
        """Multipart in (file + model + fields); records the fields and the file's name and bytes."""
        if not request.headers.get("authorization", "").startswith("Bearer sk-"):
            return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, status_code=401)
        form = await request.form()
        upload = form.get("file")
        audio = await upload.read() if upload is not None and not isinstance(upload, str) else b""
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        self._record(request, {**fields, "file": {"filename": getattr(upload, "filename", None), "bytes": audio}})
        model = fields.get("model", "")
        self.calls[model] += 1
        return JSONResponse({"text": f"heard {len(audio)} bytes", "usage": {
            "type": "tokens", "input_tokens": 11 + _over(model), "output_tokens": 3, "total_tokens": 14}})

    async def _openai_stream(self, model: str, text: str, call: str | None, usage: dict[str, Any],
                             body: dict[str, Any]) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate(text.split(" ") if text else []):
            yield chunk({"content": word if i == 0 else " " + word})
            await asyncio.sleep(0)
            if i == 1:
                await self._mid_stream(model)
                for line in self._flood(model):
                    yield line
        if call:
            yield chunk({"tool_calls": [{"index": 0, "id": "call_fake1", "type": "function",
                                         "function": {"name": call, "arguments": ""}}]})
            for piece in ('{"city": ', '"Paris"}'):
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        yield chunk({}, "tool_calls" if call else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
                    "choices": [], "usage": usage}
            yield f"data: {json.dumps(data)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        linger = re.search(r"(?:^|-)linger(\d+)(?:-|$)", model)
        if linger:  # a provider that keeps the response open after its last event
            await asyncio.sleep(float(linger.group(1)))

    # ---- Anthropic --------------------------------------------------------------------------------------
    async def messages(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if not request.headers.get("x-api-key", "").startswith("sk-") or not request.headers.get("anthropic-version"):
            return JSONResponse({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
                                status_code=401)
        model = body.get("model", "")
        fault = await self._fault(model, "anthropic")
        if fault is not None:
            return fault
        tools = body.get("tools") or []
        text, call = self._answer(body.get("messages") or [], tools, tools[0]["name"] if tools else None)
        prompt = sum(_words(json.dumps(m)) for m in body["messages"]) + _words(str(body.get("system", "")))
        prompt += _over(model)
        usage = {"input_tokens": prompt, "output_tokens": _words(text or "call")}
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        if call:
            blocks.append({"type": "tool_use", "id": "toolu_fake1", "name": call, "input": {"city": "Paris"}})
        stop = "tool_use" if call else "end_turn"
        if not body.get("stream"):
            return JSONResponse({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                                 "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage})
        return StreamingResponse(self._anthropic_stream(model, text, call, usage, stop),
                                 media_type="text/event-stream")

    async def _anthropic_stream(self, model: str, text: str, call: str | None, usage: dict[str, Any],
                                stop: str) -> AsyncIterator[bytes]:
        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

        yield event("message_start", {"message": {
            "id": "msg_fake", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": usage["input_tokens"],
                                                                  "output_tokens": 1}}})
        index = 0
        if text:
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            for i, word in enumerate(text.split(" ")):
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                          "text": word if i == 0 else " " + word}})
                await asyncio.sleep(0)
                if i == 1:
                    await self._mid_stream(model)
                    for line in self._flood(model):
                        yield line
            yield event("content_block_stop", {"index": 0})
            index = 1
        if call:
            yield event("content_block_start", {"index": index, "content_block": {
                "type": "tool_use", "id": "toolu_fake1", "name": call, "input": {}}})
            for piece in ('{"city": ', '"Paris"}'):
                yield event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta",
                                                                              "partial_json": piece}})
            yield event("content_block_stop", {"index": index})
        yield event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"]}})
        yield event("message_stop", {})

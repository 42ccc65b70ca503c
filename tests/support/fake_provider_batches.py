"""The fake providers' batch APIs (mounted by tests/support/fake_providers.py): OpenAI's files + batches and
Anthropic's Message Batches, as state machines that finish on their second status read and answer each line as
the fake's chat endpoints would (``echo: <last user text>``, usage counted the same way).

Scripted by the upstream model (dash-separated tokens, like the fake's other faults): ``nobatch`` refuses the
batch (400 on create), ``hold`` never finishes by itself (only a cancel ends it: the first line's answer is
kept, the rest never ran). A line whose last user text contains ``bad-line`` answers a 400 error.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from tests.support.fake_providers import FakeProviders


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _tokens(model: str) -> set[str]:
    return set(model.split("-"))


class FakeBatchApis:
    def __init__(self, fake: FakeProviders) -> None:
        self.fake = fake
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}

    def routes(self) -> list[Route]:
        return [Route("/openai/v1/files", self.upload, methods=["POST"]),
                Route("/openai/v1/files/{file_id}/content", self.content, methods=["GET"]),
                Route("/openai/v1/batches", self.openai_create, methods=["POST"]),
                Route("/openai/v1/batches/{batch_id}", self.openai_get, methods=["GET"]),
                Route("/openai/v1/batches/{batch_id}/cancel", self.openai_cancel, methods=["POST"]),
                Route("/anthropic/v1/messages/batches", self.anthropic_create, methods=["POST"]),
                Route("/anthropic/v1/messages/batches/{batch_id}", self.anthropic_get, methods=["GET"]),
                Route("/anthropic/v1/messages/batches/{batch_id}/cancel", self.anthropic_cancel, methods=["POST"]),
                Route("/anthropic/v1/messages/batches/{batch_id}/results", self.anthropic_results,
                      methods=["GET"])]

    def _record(self, request: Request, body: dict[str, Any]) -> None:
        self.fake.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body})

    # ---- answers ---------------------------------------------------------------------------------------
    @staticmethod
    def _last_text(messages: list[dict[str, Any]]) -> str:
        content = (messages[-1] if messages else {}).get("content")
        if isinstance(content, list):
            content = " ".join(b.get("text", "") for b in content if isinstance(b, dict))
        return str(content or "")

    def _chat(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        messages = body.get("messages") or []
        text = self._last_text(messages)
        if "bad-line" in text:
            return 400, {"error": {"message": "scripted bad line", "type": "invalid_request_error", "code": None}}
        answer = f"echo: {text}"
        usage = {"prompt_tokens": sum(_words(json.dumps(m)) for m in messages),
                 "completion_tokens": _words(answer)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return 200, {"id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": 1700000000,
                     "model": body.get("model"), "usage": usage,
                     "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                  "logprobs": None, "finish_reason": "stop"}]}

    def _message(self, params: dict[str, Any]) -> dict[str, Any]:
        messages = params.get("messages") or []
        text = self._last_text(messages)
        if "bad-line" in text:
            return {"type": "errored", "error": {"type": "error", "error": {
                "type": "invalid_request_error", "message": "scripted bad line"}}}
        answer = f"echo: {text}"
        prompt = sum(_words(json.dumps(m)) for m in messages) + _words(str(params.get("system", "")))
        return {"type": "succeeded", "message": {
            "id": f"msg_{uuid.uuid4().hex[:8]}", "type": "message", "role": "assistant", "model": params.get("model"),
            "content": [{"type": "text", "text": answer}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": _words(answer)}}}

    @staticmethod
    def _refused(model: str, anthropic: bool) -> Response | None:
        if "nobatch" not in _tokens(model):
            return None
        message = f"scripted: no batches for {model}"
        body = ({"type": "error", "error": {"type": "invalid_request_error", "message": message}} if anthropic
                else {"error": {"message": message, "type": "invalid_request_error", "code": None}})
        return JSONResponse(body, status_code=400)

    # ---- OpenAI ----------------------------------------------------------------------------------------
    @staticmethod
    def _openai_key(request: Request) -> Response | None:
        if request.headers.get("authorization", "").startswith("Bearer sk-"):
            return None
        return JSONResponse({"error": {"message": "bad key", "type": "invalid_request_error"}}, status_code=401)

    async def upload(self, request: Request) -> Response:
        form = await request.form()
        upload = form.get("file")
        data = await upload.read() if upload is not None and not isinstance(upload, str) else b""
        self._record(request, {"purpose": form.get("purpose"), "filename": getattr(upload, "filename", None),
                               "bytes": data})
        if (refused := self._openai_key(request)) is not None:
            return refused
        file_id = f"file-fake{uuid.uuid4().hex[:10]}"
        self.files[file_id] = data
        return JSONResponse({"id": file_id, "object": "file", "bytes": len(data), "created_at": 1700000000,
                             "filename": getattr(upload, "filename", "input.jsonl"), "purpose": "batch"})

    async def content(self, request: Request) -> Response:
        self._record(request, {})
        if (refused := self._openai_key(request)) is not None:
            return refused
        file_id = request.path_params["file_id"]
        if file_id not in self.files:
            return JSONResponse({"error": {"message": "no such file", "type": "invalid_request_error"}}, 404)
        return Response(self.files[file_id], media_type="application/jsonl")

    async def openai_create(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if (refused := self._openai_key(request)) is not None:
            return refused
        raw = self.files.get(str(body.get("input_file_id")), b"")
        lines = [json.loads(row) for row in raw.decode().splitlines() if row.strip()]
        model = str((lines[0]["body"] if lines else {}).get("model", ""))
        if (refused := self._refused(model, anthropic=False)) is not None:
            return refused
        batch_id = f"batch_fake{uuid.uuid4().hex[:10]}"
        self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body.get("endpoint"),
                                  "input_file_id": body.get("input_file_id"), "status": "validating",
                                  "completion_window": body.get("completion_window"), "output_file_id": None,
                                  "error_file_id": None, "request_counts": {"total": len(lines), "completed": 0,
                                                                             "failed": 0},
                                  "_lines": lines, "_polls": 0, "_hold": "hold" in _tokens(model)}
        return JSONResponse(self._openai_view(batch_id))

    def _openai_view(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    def _openai_finish(self, batch: dict[str, Any], lines: list[dict[str, Any]], status: str) -> None:
        out: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for line in lines:
            code, answer = self._chat(line["body"])
            row = {"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": line["custom_id"],
                   "response": {"status_code": code, "request_id": uuid.uuid4().hex, "body": answer}, "error": None}
            (out if code == 200 else errors).append(row)
        for rows, field in ((out, "output_file_id"), (errors, "error_file_id")):
            if rows:
                file_id = f"file-fake{uuid.uuid4().hex[:10]}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[field] = file_id
        batch["status"] = status
        batch["request_counts"].update(completed=len(out), failed=len(errors))

    async def openai_get(self, request: Request) -> Response:
        self._record(request, {})
        if (refused := self._openai_key(request)) is not None:
            return refused
        batch = self.batches[request.path_params["batch_id"]]
        batch["_polls"] += 1
        if batch["status"] == "cancelling":
            self._openai_finish(batch, batch["_lines"][:1], "cancelled")
        elif batch["status"] in ("validating", "in_progress") and (batch["_polls"] < 2 or batch["_hold"]):
            batch["status"] = "in_progress"
        elif batch["status"] in ("validating", "in_progress"):
            self._openai_finish(batch, batch["_lines"], "completed")
        return JSONResponse(self._openai_view(batch["id"]))

    async def openai_cancel(self, request: Request) -> Response:
        self._record(request, {})
        batch = self.batches[request.path_params["batch_id"]]
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
        return JSONResponse(self._openai_view(batch["id"]))

    # ---- Anthropic -------------------------------------------------------------------------------------
    @staticmethod
    def _anthropic_key(request: Request) -> Response | None:
        if request.headers.get("x-api-key", "").startswith("sk-") and request.headers.get("anthropic-version"):
            return None
        return JSONResponse({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
                            status_code=401)

    def _anthropic_view(self, batch_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    async def anthropic_create(self, request: Request) -> Response:
        body = await request.json()
        self._record(request, body)
        if (refused := self._anthropic_key(request)) is not None:
            return refused
        requests = body.get("requests") or []
        model = str((requests[0]["params"] if requests else {}).get("model", ""))
        if (refused := self._refused(model, anthropic=True)) is not None:
            return refused
        batch_id = f"msgbatch_fake{uuid.uuid4().hex[:10]}"
        self.batches[batch_id] = {"id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                                  "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0,
                                                     "canceled": 0, "expired": 0},
                                  "cancel_initiated_at": None, "results_url": None, "ended_at": None,
                                  "_requests": requests, "_polls": 0, "_hold": "hold" in _tokens(model)}
        return JSONResponse(self._anthropic_view(batch_id))

    async def anthropic_get(self, request: Request) -> Response:
        self._record(request, {})
        if (refused := self._anthropic_key(request)) is not None:
            return refused
        batch = self.batches[request.path_params["batch_id"]]
        batch["_polls"] += 1
        cancelling = batch["processing_status"] == "canceling"
        if batch["processing_status"] != "ended" and (cancelling or (batch["_polls"] >= 2 and not batch["_hold"])):
            results = []
            for i, item in enumerate(batch["_requests"]):
                result = (self._message(item["params"]) if not cancelling or i == 0 else {"type": "canceled"})
                results.append({"custom_id": item["custom_id"], "result": result})
            batch["_results"] = results
            counts = batch["request_counts"]
            counts["processing"] = 0
            for row in results:
                counts[row["result"]["type"]] += 1
            batch["processing_status"] = "ended"
            batch["ended_at"] = "2026-01-01T00:00:00Z"
            batch["results_url"] = f"{self.fake.anthropic_base}/messages/batches/{batch['id']}/results"
        return JSONResponse(self._anthropic_view(batch["id"]))

    async def anthropic_cancel(self, request: Request) -> Response:
        self._record(request, {})
        batch = self.batches[request.path_params["batch_id"]]
        if batch["processing_status"] == "in_progress":
            batch["processing_status"] = "canceling"
            batch["cancel_initiated_at"] = "2026-01-01T00:00:00Z"
        return JSONResponse(self._anthropic_view(batch["id"]))

    async def anthropic_results(self, request: Request) -> Response:
        self._record(request, {})
        if (refused := self._anthropic_key(request)) is not None:
            return refused
        batch = self.batches[request.path_params["batch_id"]]
        rows = batch.get("_results") or []
        return Response("".join(json.dumps(r) + "\n" for r in rows).encode(), media_type="application/jsonl")

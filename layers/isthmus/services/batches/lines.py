"""One batch line, run as the interactive request it describes: the same inference service as the edge (routing
over pools, CoeOS and aliases, the budget hold, settlement and the usage row), for the batch's owner.

The owner is checked again for every line (:class:`Owners`): a key revoked or a user blocked after the batch was
created stops its remaining lines (each becomes an error line), as it would stop the key's own requests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isthmus.dialects import anthropic_messages, openai_chat, openai_responses
from isthmus.errors import ApiError, Dialect
from isthmus.services.batches.model import Batch

if TYPE_CHECKING:
    from isthmus.services.inference.inference import InferenceService
    from isthmus.services.inference.passthrough import PassthroughService
    from isthmus.services.tenancy.gate import Principal

OWNER_RECHECK_S = 10.0  # a batch's key is looked up again at most this often per worker


@dataclass
class Outcome:
    """A line's HTTP answer: ``status_code`` and the body its endpoint would have answered."""

    status_code: int
    body: Any
    retryable: bool = False  # a node or upstream failure (5xx): worth another attempt


class Owners:
    """The principal a batch's lines run as, looked up again every ``OWNER_RECHECK_S``."""

    def __init__(self, lookup: Callable[[Batch], Awaitable[Principal | None]]) -> None:
        self.lookup = lookup
        self._cache: dict[str, tuple[float, Principal | None]] = {}

    async def principal(self, batch: Batch) -> Principal | None:
        cached = self._cache.get(batch.batch_id)
        if cached is not None and time.monotonic() - cached[0] < OWNER_RECHECK_S:
            return cached[1]
        principal = await self.lookup(batch)  # raises ApiError 401/403: every remaining line is refused
        self._cache[batch.batch_id] = (time.monotonic(), principal)
        if len(self._cache) > 1000:
            self._cache.clear()
        return principal


def _error_outcome(exc: ApiError, dialect: Dialect) -> Outcome:
    return Outcome(exc.status, exc.body(dialect), retryable=exc.status >= 500 or exc.status == 429)


class LineRunner:
    def __init__(self, inference: Callable[[], InferenceService], passthrough: Callable[[], PassthroughService],
                 owners: Owners) -> None:
        self.inference = inference
        self.passthrough = passthrough
        self.owners = owners

    async def run(self, batch: Batch, body: dict[str, Any], request_id: str) -> Outcome:
        """The line's answer; never raises for the line's own failures (they are its answer)."""
        endpoint = batch.endpoint
        dialect = Dialect.ANTHROPIC if endpoint == "/v1/messages" else Dialect.OPENAI
        body = {**body, "stream": False}
        if batch.model is not None and not body.get("model"):
            body["model"] = batch.model
        try:
            principal = await self.owners.principal(batch)
        except ApiError as exc:
            return _error_outcome(exc, dialect)
        if endpoint == "/v1/embeddings":
            return await self._passthrough(principal, body, request_id)
        service = self.inference()
        try:
            if endpoint == "/v1/messages":
                req_m = anthropic_messages.parse(body)
                internal = anthropic_messages.to_internal(req_m)
            elif endpoint == "/v1/responses":
                req_r = openai_responses.parse({**body, "store": False})
                internal = openai_responses.to_internal(req_r)
            else:
                internal = openai_chat.to_internal(openai_chat.parse(body))
            call = await service.begin(principal, internal, endpoint=endpoint, request_id=request_id)
        except ApiError as exc:  # turned away before admission: a refused row, as an interactive request gets
            await service.refuse(principal, model=str(body.get("model") or ""), endpoint=endpoint, error=exc,
                                 request_id=request_id)
            return _error_outcome(exc, dialect)
        try:
            resp = await service.complete(call)  # settled by the service when it fails
        except ApiError as exc:
            return _error_outcome(exc, dialect)
        await service.settle(call, resp.usage, status="success", status_code=200)
        if endpoint == "/v1/messages":
            return Outcome(200, anthropic_messages.to_message(resp))
        if endpoint == "/v1/responses":
            return Outcome(200, openai_responses.to_response(resp, req_r))
        return Outcome(200, openai_chat.to_chat_completion(resp))

    async def _passthrough(self, principal: Principal | None, body: dict[str, Any], request_id: str) -> Outcome:
        body.pop("stream", None)
        try:
            out = await self.passthrough().forward(principal, "/embeddings", body, endpoint="/v1/embeddings",
                                                   request_id=request_id)
        except ApiError as exc:
            return _error_outcome(exc, Dialect.OPENAI)
        try:
            answer = json.loads(out.content)
        except ValueError:
            answer = {"error": {"message": out.content[:500].decode(errors="replace"), "type": "upstream_error"}}
        return Outcome(out.status, answer, retryable=out.status >= 500 or out.status == 429)

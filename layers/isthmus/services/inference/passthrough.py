"""Raw OpenAI passthrough (``/v1/embeddings``, ``/v1/moderations``, ``/v1/images/generations``,
``/v1/audio/speech``) to a published alias of an OpenAI-protocol provider: the body is forwarded as-is with
the model rewritten, the answer comes back as-is; admitted and billed like any call (prompt tokens from the
upstream's ``usage`` when it reports one, never more than the hold: an upper bound of them, see
isthmus.services.inference.token_bounds)."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isthmus.errors import ApiError
from isthmus.ports.gate import Gate
from isthmus.services.inference.token_bounds import TokenBound, fixed, passthrough_bound

if TYPE_CHECKING:
    from isthmus.backends.cloud import CloudResolver
    from isthmus.services.tenancy.gate import Principal

_KEPT_HEADERS = ("content-type", "openai-processing-ms")


@dataclass
class Forwarded:
    status: int
    content: bytes
    headers: dict[str, str]


def _prompt_tokens(content: bytes, content_type: str) -> int:
    if not content_type.startswith("application/json"):
        return 0
    try:
        usage = json.loads(content).get("usage") or {}
        return int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


class PassthroughService:
    def __init__(self, resolver: CloudResolver, gate: Gate | None) -> None:
        self.resolver = resolver
        self.gate = gate

    async def forward(self, principal: Principal | None, path: str, body: Any, *, endpoint: str,
                      request_id: str, on_admitted: Callable[[], None] | None = None,
                      detach_settle: bool = False) -> Forwarded:
        """``on_admitted`` runs once the call is admitted (from then on its usage row is this service's).
        ``detach_settle`` (a long-running server): a successful call's settlement runs in a task of its own, so
        the answer does not wait for its settlement batch; under Lambda the invoke ends with the response, so
        there it is settled before returning."""
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model.strip():
            raise ApiError(400, "model is required", param="model", code="invalid_value")
        chain = await self.resolver.backend(model)
        backend = next((b for b in (chain.backends if chain else []) if hasattr(b, "raw")), None)
        if backend is None:
            raise ApiError(404, f"'{model}' is not a published alias of an OpenAI-protocol provider.",
                           code="model_not_found", param="model")
        admission = None
        if self.gate is not None and principal is not None:
            # Settlement charges the upstream's prompt tokens only: the hold is their upper bound, no output
            # (the 4-characters-a-token estimate is what the tokens-per-minute limit takes, as for chat).
            estimate = max(1, math.ceil(len(json.dumps(body)) / 4))
            admission = await self.gate.admit(principal, model=model.strip(), endpoint=endpoint,
                                              input_tokens_estimate=estimate, max_output_tokens=0,
                                              bound=fixed(TokenBound(passthrough_bound(body), 0)))
        started = time.monotonic()
        if on_admitted is not None:
            on_admitted()

        async def settle(status: str, code: int, prompt_tokens: int = 0) -> None:
            if self.gate is not None and admission is not None:
                await self.gate.settle(admission, prompt_tokens=prompt_tokens, completion_tokens=0, cached_tokens=0,
                                       status=status, status_code=code,
                                       latency_ms=int((time.monotonic() - started) * 1000), backend=backend.name,
                                       request_id=request_id)

        try:
            upstream = await backend.raw(path, body)
            try:
                content = await upstream.aread()
            finally:
                await upstream.aclose()
        except ApiError as exc:
            await settle("error", exc.status)
            raise
        except BaseException:
            await settle("error", 502)
            raise
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in _KEPT_HEADERS}
        settled = settle("success", upstream.status_code, _prompt_tokens(content, headers.get("content-type", "")))
        if detach_settle:
            _detached(settled)
        else:
            await settled
        return Forwarded(upstream.status_code, content, headers)


_settling: set[asyncio.Task[None]] = set()  # strong references: a detached settle must not be collected


def _detached(settling: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(settling)
    _settling.add(task)
    task.add_done_callback(_settling.discard)

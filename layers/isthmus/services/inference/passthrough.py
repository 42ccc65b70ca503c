"""Raw OpenAI passthrough (``/v1/embeddings``, ``/v1/moderations``, ``/v1/images/generations``,
``/v1/audio/speech``, ``/v1/rerank``, ``/v1/audio/transcriptions``) to a published alias of an OpenAI-protocol
provider: the body is forwarded as-is with the model rewritten (a multipart body's ``model`` part rewritten in
place), the answer comes back as-is; admitted and billed like any call (prompt tokens from the upstream's
``usage`` when it reports one, never more than the hold: an upper bound of them, see
isthmus.services.inference.token_bounds). Rerank and transcriptions are offered by few providers: those routes
need the alias to be published with the ``rerank`` / ``transcription`` capability, else a 404 that says so.
``/v1/embeddings`` for any other model is routed like a chat, to a node pool (or the default agent) whose model is
an embedding model, or to an OpenAI-protocol single-Mac upstream."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from isthmus.errors import ApiError
from isthmus.ports.gate import Gate
from isthmus.services.inference.form_model import form_model, with_form_model
from isthmus.services.inference.token_bounds import PER_REQUEST_TOKENS, TokenBound, fixed, passthrough_bound
from isthmus_contracts.internal import InternalRequest, Message, TextPart

if TYPE_CHECKING:
    from isthmus.backends.cloud import CloudResolver
    from isthmus.services.tenancy.gate import Principal

_KEPT_HEADERS = ("content-type", "openai-processing-ms")


@dataclass
class Forwarded:
    status: int
    content: bytes
    headers: dict[str, str]


Send = Callable[[Any], Awaitable[Any]]  # sends the call to the chosen backend, answers its raw response
Routed = Callable[[], Awaitable[tuple[Any, Send]]]


def _prompt_tokens(content: bytes, content_type: str) -> int:
    if not content_type.startswith("application/json"):
        return 0
    try:
        usage = json.loads(content).get("usage") or {}
        # OpenAI: prompt_tokens; transcriptions: input_tokens; Jina's rerank: total_tokens (its input only)
        return int(usage.get("prompt_tokens") or usage.get("input_tokens") or usage.get("total_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0


class PassthroughService:
    def __init__(self, resolver: CloudResolver, gate: Gate | None) -> None:
        self.resolver = resolver
        self.gate = gate

    async def _routed_embeddings(self, model: str, body: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Embeddings for a model that is not a cloud alias: routed like a chat (pool alias, cluster, single-Mac
        upstream, the default agent) to a backend that serves ``/embeddings`` itself (an agent whose model is an
        embedding model, or an OpenAI-protocol upstream), with the model named as that backend knows it."""
        probe = InternalRequest(model=model, messages=[Message(role="user", content=[TextPart(text="")])])
        backend, routed = await self.resolver.resolve(probe, endpoint="/v1/embeddings")
        if not hasattr(backend, "raw"):
            return None, body
        return backend, {**body, "model": routed.model}

    async def forward(self, principal: Principal | None, path: str, body: Any, *, endpoint: str,
                      request_id: str, on_admitted: Callable[[], None] | None = None,
                      capability: str | None = None, detach_settle: bool = False) -> Forwarded:
        """``on_admitted`` runs once the call is admitted (from then on its usage row is this service's);
        ``capability``: what the alias must be published with to take this route. ``detach_settle`` (a
        long-running server): a successful call's settlement runs in a task of its own, so the answer does not
        wait for its settlement batch; under Lambda the invoke ends with the response, so there it is settled
        before returning."""
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model.strip():
            raise ApiError(400, "model is required", param="model", code="invalid_value")
        routed: Routed | None = None
        if path == "/embeddings":
            async def routed() -> tuple[Any, Send]:
                backend, routed_body = await self._routed_embeddings(model.strip(), body)
                return backend, lambda b: b.raw(path, routed_body)

        # The 4-characters-a-token estimate is what the tokens-per-minute limit takes, as for chat.
        return await self._forward(
            principal, model, endpoint=endpoint, request_id=request_id, on_admitted=on_admitted,
            capability=capability,
            sizes=lambda: (max(1, math.ceil(len(json.dumps(body)) / 4)), passthrough_bound(body)),
            send=lambda backend: backend.raw(path, body), routed=routed, detach_settle=detach_settle)

    async def forward_form(self, principal: Principal | None, path: str, raw: bytes, content_type: str, *,
                           endpoint: str, request_id: str, on_admitted: Callable[[], None] | None = None,
                           capability: str | None = None, detach_settle: bool = False) -> Forwarded:
        """A multipart/form-data call (an audio file and its fields): bytes forwarded as they came, except the
        ``model`` part. Its prompt bound is the body's size: audio is billed at far fewer tokens than its bytes
        (tens of tokens a second against a kilobyte or more a second for any codec)."""
        model = form_model(raw, content_type)
        if not model:
            raise ApiError(400, "model is required", param="model", code="invalid_value")

        async def send(backend: Any) -> Any:
            upstream = with_form_model(raw, content_type, backend.target.upstream_model)
            return await backend.raw(path, {}, content=upstream, content_type=content_type)

        return await self._forward(principal, model, endpoint=endpoint, request_id=request_id,
                                   on_admitted=on_admitted, capability=capability,
                                   sizes=lambda: (max(1, math.ceil(len(raw) / 4)), len(raw) + PER_REQUEST_TOKENS),
                                   send=send, detach_settle=detach_settle)

    async def _forward(self, principal: Principal | None, model: str, *, endpoint: str, request_id: str,
                       on_admitted: Callable[[], None] | None, capability: str | None,
                       sizes: Callable[[], tuple[int, int]], send: Send, routed: Routed | None = None,
                       detach_settle: bool = False) -> Forwarded:
        """``routed``: where a model that is no cloud alias goes instead (a backend and how to send to it);
        ``sizes``: the call's (tokens-per-minute estimate, prompt token bound), computed only when it is admitted
        (both walk the whole body: nothing to pay for without a gate)."""
        chain = await self.resolver.backend(model)
        backend = next((b for b in (chain.backends if chain else []) if hasattr(b, "raw")), None)
        if backend is None and routed is not None:
            backend, send = await routed()
        if backend is None:
            raise ApiError(404, f"'{model}' is not a published alias of an OpenAI-protocol provider.",
                           code="model_not_found", param="model")
        if capability is not None and capability not in getattr(backend.target, "capabilities", ()):
            raise ApiError(404, f"'{model}' does not offer {endpoint}: its provider publishes it without the "
                           f"'{capability}' capability.", code="model_not_found", param="model")
        admission = None
        if self.gate is not None and principal is not None:
            # Settlement charges the upstream's prompt tokens only: the hold is their upper bound, no output.
            estimate, bound = sizes()
            admission = await self.gate.admit(principal, model=model.strip(), endpoint=endpoint,
                                              input_tokens_estimate=estimate, max_output_tokens=0,
                                              bound=fixed(TokenBound(bound, 0)))
        started = time.monotonic()
        if on_admitted is not None:
            on_admitted()

        async def settle(status: str, code: int, answer: bytes = b"", content_type: str = "") -> None:
            if self.gate is not None and admission is not None:
                # The answer's usage is read here, in the (detached) settlement: off the answer's path, and
                # not at all without an admission (a large embeddings answer is a large JSON document).
                await self.gate.settle(admission, prompt_tokens=_prompt_tokens(answer, content_type),
                                       completion_tokens=0, cached_tokens=0,
                                       status=status, status_code=code,
                                       latency_ms=int((time.monotonic() - started) * 1000), backend=backend.name,
                                       request_id=request_id, detached=detach_settle)

        try:
            upstream = await send(backend)
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
        if admission is None:
            return Forwarded(upstream.status_code, content, headers)
        settled = settle("success", upstream.status_code, content, headers.get("content-type", ""))
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

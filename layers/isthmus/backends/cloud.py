"""Cloud aliases on the inference path.

:class:`CloudResolver` is a :class:`~isthmus.ports.backend.BackendResolver`: an exact published cloud alias
(step 3 of the routing order, after single-Mac upstream ids, which the inner resolver owns) resolves to a
:class:`FallbackBackend` over the alias's chain; every other name goes to the inner resolver unchanged.
The concrete model is the alias itself (usage rows and pricing are keyed by it; the backend rewrites the
upstream model). :class:`FallbackBackend` tries the next alias of the chain when one fails before its first
byte (after retries) with 429, 5xx or a timeout; once a stream has begun it never switches.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus.adapters.cloud.protocols import backend_for
from isthmus.backends.first_byte import first_answering
from isthmus.background import SingleFlight
from isthmus.errors import ApiError
from isthmus.observability import get_logger
from isthmus.ports.backend import BackendResolver, InferenceBackend
from isthmus.services.inference.file_parts import DOCUMENT_CAPABILITIES
from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent

logger = get_logger("cloud")


def _falls_back(exc: Exception) -> bool:
    return isinstance(exc, ApiError) and (exc.status == 429 or exc.status >= 500)


def _log_fallback(backend: Any, exc: Exception) -> None:
    logger.warning("cloud alias failed, trying its fallback",
                   extra={"backend": backend.name, "status": getattr(exc, "status", None)})


def _last_failure(failures: list[tuple[Any, Exception]]) -> Exception:
    return failures[-1][1]


async def _first_event(backend: Any, request: InternalRequest) -> tuple[StreamEvent, AsyncGenerator[StreamEvent]]:
    """The backend's stream opened up to its first event (what decides whether the chain moves on)."""
    events = backend.stream(request)
    try:
        return await anext(events), events
    except StopAsyncIteration:
        raise ApiError(502, "the provider closed the stream without answering", code="upstream_error") from None
    except BaseException:
        await events.aclose()
        raise


class FallbackBackend:
    def __init__(self, backends: list[Any], *, reads_documents: bool = False) -> None:
        if not backends:
            raise ValueError("a fallback chain needs at least one backend")
        self.backends = backends
        self.name = backends[0].name
        # File blocks are forwarded as they are only when every link of the chain reads them (a fallback that
        # cannot would drop the file in silence); else the file is extracted to text first.
        self.reads_documents = reads_documents

    async def generate(self, request: InternalRequest) -> InternalResponse:
        backend, answer = await first_answering(self.backends, lambda b: b.generate(request),
                                                fails_over=_falls_back, none_answered=_last_failure,
                                                on_failure=_log_fallback)
        self.name = backend.name  # the usage row names the provider that answered
        return answer

    async def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        backend, (first, events) = await first_answering(self.backends, lambda b: _first_event(b, request),
                                                         fails_over=_falls_back, none_answered=_last_failure,
                                                         on_failure=_log_fallback)
        self.name = backend.name
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()

    async def count_tokens(self, request: TokenizeRequest) -> int | None:
        return None


class CloudResolver:
    """Cloud aliases first (from ``catalog``), then ``inner`` for everything else."""

    def __init__(self, catalog: Any, inner: BackendResolver) -> None:
        self.catalog = catalog
        self.inner = inner
        self._refreshes = SingleFlight("cloud catalog")

    def _known(self) -> tuple[dict[str, Any], set[str]] | None:
        """The catalog's last state, served as it is while one background read refreshes it once stale: the
        request path never waits on the providers table once it has been read (a change made through this
        process invalidates it, so that one is seen at once)."""
        peek = getattr(self.catalog, "cached_state", None)
        state = peek() if peek is not None else None
        if state is not None and not self.catalog.fresh():
            self._refreshes.start("catalog", run_in_threadpool(self.catalog.refresh))
        return state

    def _disabled(self, alias: str) -> bool:
        try:
            return bool(self.catalog.disabled(alias))
        except Exception:
            return False

    async def backend(self, model: str) -> FallbackBackend | None:
        known = self._known()
        if known is not None and model.strip() not in known[0]:
            return None  # the common case, a local model: answered from the cache without a thread hop
        cached = getattr(self.catalog, "cached_chain", None)
        chain = cached(model.strip()) if known is not None and cached is not None else None
        try:
            if chain is None:  # not loaded yet, or a key still to open: the blocking path, in the threadpool
                chain = await run_in_threadpool(self.catalog.chain, model.strip())
        except Exception as exc:  # no providers table (single-Mac, bare tests): only the inner resolver serves
            logger.warning("cloud catalog unavailable", extra={"error": type(exc).__name__})
            return None
        if not chain:
            return None
        return FallbackBackend([backend_for(t) for t in chain],
                               reads_documents=all(DOCUMENT_CAPABILITIES & set(t.capabilities) for t in chain))

    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[InferenceBackend, InternalRequest]:
        model = request.model.strip()
        backend = await self.backend(model)
        if backend is not None:
            return backend, request.model_copy(update={"model": model})
        known = self._known()
        disabled = model in known[1] if known is not None else await run_in_threadpool(self._disabled, model)
        if disabled:
            raise ApiError(404, f"The model '{model}' is not available: its provider is disabled.",
                           code="model_not_found", param="model")
        return await self.inner.resolve(request, endpoint=endpoint, axis_header=axis_header)



class NoCloudAliases:
    """A catalog that publishes nothing (single-Mac mode: no providers table, its one agent serves every name)."""

    def cached_state(self) -> tuple[dict[str, Any], set[str]]:
        return {}, set()

    def fresh(self) -> bool:
        return True

    def refresh(self) -> None:
        return None

    def chain(self, alias: str) -> list[Any]:
        return []

    def disabled(self, alias: str) -> bool:
        return False

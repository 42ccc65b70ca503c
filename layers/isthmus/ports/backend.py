"""What the inference service needs from a backend (a node pool, a single-Mac upstream, a cloud provider)
and from routing (which backend serves a request)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent


class InferenceBackend(Protocol):
    name: str  # what the usage row records as the backend ("mlx:default", "agent:http://...", "openai", ...)

    async def generate(self, request: InternalRequest) -> InternalResponse:
        """The whole answer. Raises ApiError for anything the caller should see."""
        ...

    def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        """Typed events; closing the iterator early cancels the generation upstream."""
        ...

    async def count_tokens(self, request: TokenizeRequest) -> int | None:
        """Exact prompt tokens with the model's own tokenizer and template, or None when unknown."""
        ...


class BackendResolver(Protocol):
    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[InferenceBackend, InternalRequest]:
        """The backend for ``request.model`` and the request as that backend gets it (the concrete model,
        routing defaults such as thinking applied); ApiError 404 when nothing serves the model."""
        ...

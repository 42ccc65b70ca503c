"""What the inference service needs from a backend (a node agent, a single-Mac upstream, a cloud provider)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent


class InferenceBackend(Protocol):
    name: str  # what the usage row records as the backend ("agent:http://10.0.0.5:8100", "openai", ...)

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
    async def resolve(self, model: str, *, session_id: str | None = None,
                      endpoint: str = "") -> tuple[InferenceBackend, str]:
        """(backend, concrete model id) for the client's ``model``; ApiError 404 when nothing serves it."""
        ...

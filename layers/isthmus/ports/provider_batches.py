"""The providers' own batch APIs as the batch engine needs them (isthmus.adapters.cloud.batch_api implements it):
submit a batch's requests, read its status, cancel it, read its results; and the Anthropic wire mapping a
handed-off chat completion line goes through (the cloud adapter's, as for a single request)."""

from __future__ import annotations

from typing import Any, Protocol

from isthmus.ports.providers import ProviderTarget
from isthmus_contracts.internal import InternalRequest, InternalResponse


class ProviderBatchApi(Protocol):
    async def submit(self, target: ProviderTarget, endpoint: str, name: str,
                     inputs: list[dict[str, Any]]) -> str: ...  # the provider's batch id; ApiError when refused
    async def status(self, target: ProviderTarget, remote_id: str) -> dict[str, Any]: ...
    async def cancel(self, target: ProviderTarget, remote_id: str) -> None: ...
    async def results(self, target: ProviderTarget, remote: dict[str, Any]) -> bytes: ...  # JSONL
    def anthropic_params(self, request: InternalRequest, upstream_model: str) -> dict[str, Any]: ...
    def anthropic_answer(self, message: dict[str, Any], model: str) -> InternalResponse: ...

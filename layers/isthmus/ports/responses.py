"""Stored Responses-API responses, for ``previous_response_id``."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict

from isthmus_contracts.internal import InternalResponse, Message


class StoredResponse(BaseModel):
    model_config = ConfigDict(defer_build=True)
    response_id: str
    model: str
    messages: list[Message]  # the request's turns (instructions excluded: they do not carry over)
    output: InternalResponse
    created_at: int


class ResponseStore(Protocol):
    async def get(self, response_id: str) -> StoredResponse | None: ...

    async def put(self, stored: StoredResponse) -> None: ...

    async def delete(self, response_id: str) -> bool: ...

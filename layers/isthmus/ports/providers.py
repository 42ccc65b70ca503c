"""Ports of the cloud providers: where provider records live and what wraps their data keys."""

from __future__ import annotations

from typing import Any, Protocol


class KeyWrapper(Protocol):
    """Wraps (encrypts) and unwraps a per-record data key: KMS in the cloud, a local key file in dev."""

    name: str  # recorded with the ciphertext ("kms", "local")

    def wrap(self, data_key: bytes) -> bytes: ...
    def unwrap(self, wrapped: bytes) -> bytes: ...


class ProviderStore(Protocol):
    """Provider records as plain dicts (the api_key only ever as an encrypted envelope). Blocking calls."""

    def get(self, provider_id: str) -> dict[str, Any] | None: ...
    def list_all(self) -> list[dict[str, Any]]: ...
    def put(self, record: dict[str, Any]) -> None: ...
    def delete(self, provider_id: str) -> bool: ...

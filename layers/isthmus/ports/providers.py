"""Ports of the cloud providers: where provider records live, what wraps their data keys, and the target a
provider protocol's backend is built for (isthmus.adapters.cloud.protocols)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class KeyWrapper(Protocol):
    """Wraps (encrypts) and unwraps a per-record data key: KMS in the cloud, a local key file in dev."""

    name: str  # recorded with the ciphertext ("kms", "local")

    def wrap(self, data_key: bytes) -> bytes: ...
    def unwrap(self, wrapped: bytes) -> bytes: ...


class SecretSealer(Protocol):
    """Seals a secret for the store (envelope encryption under a :class:`KeyWrapper`) and opens it again; the
    context (the provider it belongs to) is bound in, so an envelope copied to another record does not open."""

    def seal(self, secret: str, context: str) -> dict[str, str]: ...
    def open(self, envelope: dict[str, str], context: str) -> str: ...


class ProviderProtocols(Protocol):
    """The cloud protocols this gateway can call (isthmus.adapters.cloud.protocols)."""

    def check(self, protocol: object) -> str: ...  # the protocol, or a 400 naming the known ones
    def backend_for(self, target: ProviderTarget) -> Any: ...  # an InferenceBackend; a 502 for an unknown one


class ProviderStore(Protocol):
    """Provider records as plain dicts (the api_key only ever as an encrypted envelope). Blocking calls."""

    def get(self, provider_id: str) -> dict[str, Any] | None: ...
    def list_all(self) -> list[dict[str, Any]]: ...
    def put(self, record: dict[str, Any]) -> None: ...
    def delete(self, provider_id: str) -> bool: ...


@dataclass(frozen=True)
class ProviderTarget:
    """One published alias of one provider, ready to call (the key only in memory, never repr'd)."""

    provider_id: str
    protocol: str
    api_base: str
    alias: str
    upstream_model: str
    api_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold sealed-at-rest secret headers
    connect_timeout: float = 5.0
    first_byte_timeout: float = 60.0  # streamed calls: until the status line and headers
    idle_timeout: float = 60.0
    whole_timeout: float = 600.0  # non-streamed calls: the headers come with the whole answer
    max_retries: int = 2
    fallbacks: tuple[str, ...] = ()  # aliases tried next when this one fails before the first byte
    capabilities: tuple[str, ...] = ()  # as published ("chat", "tools", "documents": reads file blocks natively)

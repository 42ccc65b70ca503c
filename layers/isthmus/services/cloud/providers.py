"""Cloud providers: configuration records (``PUT /admin/providers/{id}``), templates, sealed api keys.

The api_key is sealed (envelope encryption: the SecretSealer port, isthmus.adapters.keywrap) before it reaches the store
and opened only when a backend is built; views answer ``api_key_set`` / ``api_key_source`` instead.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from isthmus.errors import ApiError
from isthmus.fields import (
    MAX_LIST_ITEMS,
    URL,
    Alias,
    EnvName,
    HeaderName,
    HeaderValue,
    ModelName,
    Name,
    Secret,
    StrictFlag,
)
from isthmus.ports.providers import ProviderProtocols, ProviderStore, ProviderTarget, SecretSealer
from isthmus.validation import clean_errors
from isthmus_contracts.internal import InternalRequest, Message, Sampling, TextPart

_SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TIMEOUT_S = 3600.0

TEMPLATES: dict[str, dict[str, Any]] = {
    "openai": {"protocol": "openai", "api_base": "https://api.openai.com/v1"},
    "anthropic": {"protocol": "anthropic", "api_base": "https://api.anthropic.com/v1"},
    "openrouter": {"protocol": "openai", "api_base": "https://openrouter.ai/api/v1", "alias_prefix": "or:",
                   "headers": {"HTTP-Referer": "https://github.com/isthmus-gateway/isthmus", "X-Title": "Isthmus"}},
}


class Timeouts(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    connect: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT_S)
    first_byte: float = Field(default=60.0, gt=0, le=MAX_TIMEOUT_S)  # from the request to the upstream's first byte
    idle: float = Field(default=60.0, gt=0, le=MAX_TIMEOUT_S)  # between chunks of a stream
    whole: float = Field(default=600.0, gt=0, le=MAX_TIMEOUT_S)  # a non-streamed answer (headers come with it)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, value: Any) -> Any:
        return _strip_nulls(value)


def _strip_nulls(body: Any) -> Any:
    return {k: v for k, v in body.items() if v is not None} if isinstance(body, dict) else body


class Published(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid")
    alias: Alias
    upstream_model: ModelName
    capabilities: list[Name] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    fallbacks: list[Alias] = Field(default_factory=list, max_length=16)

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, value: Any) -> Any:
        return _strip_nulls(value)


class ProviderConfig(BaseModel):
    """The PUT body. ``template`` fills protocol, api_base and headers the body leaves out."""

    model_config = ConfigDict(defer_build=True, extra="forbid")
    template: Literal["openai", "anthropic", "openrouter"] | None = None
    protocol: Name | None = None
    api_base: URL | None = None
    api_key: Secret | None = Field(default=None, repr=False)
    api_key_env: EnvName | None = None
    enabled: StrictFlag = True
    # Header names and values as HTTP allows them: a CR/LF in a value would inject headers upstream.
    headers: dict[HeaderName, HeaderValue] = Field(default_factory=dict, max_length=64)
    published: list[Published] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_retries: int = Field(default=2, ge=0, le=10)


class ProviderRecord(BaseModel):
    """What the store keeps (the key only sealed)."""

    model_config = ConfigDict(defer_build=True)

    provider_id: str
    protocol: str  # a module of isthmus.adapters.cloud (protocols.py); checked on write and on call
    api_base: str
    api_key_sealed: dict[str, str] | None = None
    secret_headers_sealed: dict[str, str] | None = None  # Authorization-like extra headers, sealed as JSON
    api_key_env: str | None = None
    enabled: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    published: list[Published] = Field(default_factory=list)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_retries: int = 2
    template: str | None = None
    created_at: str
    updated_at: str

    def view(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", exclude={"api_key_sealed", "secret_headers_sealed"})
        out["secret_headers_set"] = bool(self.secret_headers_sealed)
        out["api_key_set"] = bool(self.api_key_sealed) or bool(self.api_key_env and os.environ.get(self.api_key_env))
        out["api_key_source"] = "config" if self.api_key_sealed else ("env" if self.api_key_env else None)
        return out


def target_for(record: ProviderRecord, entry: Published, api_key: str | None,
               secret_headers: dict[str, str] | None = None) -> ProviderTarget:
    t = record.timeouts
    return ProviderTarget(provider_id=record.provider_id, protocol=record.protocol, api_base=record.api_base,
                          alias=entry.alias, upstream_model=entry.upstream_model, api_key=api_key,
                          headers={**record.headers, **(secret_headers or {})},
                          connect_timeout=t.connect, first_byte_timeout=t.first_byte,
                          idle_timeout=t.idle, whole_timeout=t.whole, max_retries=record.max_retries,
                          fallbacks=tuple(entry.fallbacks), capabilities=tuple(entry.capabilities))


class ProviderService:
    def __init__(self, store: ProviderStore, sealer: SecretSealer, protocols: ProviderProtocols) -> None:
        self.store, self.sealer, self.protocols = store, sealer, protocols

    @staticmethod
    def _context(provider_id: str) -> str:
        return f"isthmus-provider:{provider_id}"

    async def put(self, provider_id: str, body: Any) -> dict[str, Any]:
        if not _ID.match(provider_id):
            raise ApiError(400, "provider id: letters, digits, '.', '_' or '-' (at most 64)", param="provider_id")
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        try:
            config = ProviderConfig.model_validate(_strip_nulls(body))
        except ValidationError as exc:
            first = clean_errors(exc.errors(include_url=False, include_input=False))[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(400, f"{field}: {first['msg']}", param=field) from None
        existing = await run_in_threadpool(self.store.get, provider_id)
        record = await run_in_threadpool(self._merge, provider_id, config, existing)  # KMS is a network call
        await self._check_aliases_free(record)
        await run_in_threadpool(self.store.put, record.model_dump(mode="json"))
        return record.view()

    def _merge(self, provider_id: str, config: ProviderConfig, existing: dict[str, Any] | None) -> ProviderRecord:
        template = TEMPLATES.get(config.template or "", {})
        protocol: Any = config.protocol or template.get("protocol")
        protocol = self.protocols.check(protocol)
        api_base = (config.api_base or template.get("api_base") or "").rstrip("/")
        if not api_base.startswith(("http://", "https://")):
            raise ApiError(400, "api_base: an http(s) URL is required", param="api_base")
        prefix = template.get("alias_prefix", "")
        published = [p if p.alias.startswith(prefix) else p.model_copy(update={"alias": prefix + p.alias})
                     for p in config.published]  # openrouter: every alias is or:<name>
        seen: set[str] = set()
        for p in published:
            if p.alias in seen:
                raise ApiError(400, f"published: alias '{p.alias}' appears twice", param="published")
            seen.add(p.alias)
        sealed = None
        if config.api_key:
            sealed = self.sealer.seal(config.api_key, self._context(provider_id))
        elif existing and not config.api_key_env:
            sealed = existing.get("api_key_sealed")  # a PUT without a key keeps the stored one
        headers = {**template.get("headers", {}), **config.headers}
        secret = {k: v for k, v in headers.items() if k.lower() in _SECRET_HEADERS}
        secret_sealed = (existing or {}).get("secret_headers_sealed")
        if secret:
            secret_sealed = self.sealer.seal(json.dumps(secret), self._context(provider_id) + ":headers")
        now = datetime.now(UTC).isoformat()
        return ProviderRecord(
            provider_id=provider_id, protocol=protocol, api_base=api_base, api_key_sealed=sealed,
            api_key_env=config.api_key_env, enabled=config.enabled,
            secret_headers_sealed=secret_sealed, published=published,
            headers={k: v for k, v in headers.items() if k not in secret},
            timeouts=config.timeouts, max_retries=config.max_retries, template=config.template,
            created_at=(existing or {}).get("created_at", now), updated_at=now)

    async def _check_aliases_free(self, record: ProviderRecord) -> None:
        mine = {p.alias for p in record.published}
        for other in await run_in_threadpool(self.store.list_all):
            if other.get("provider_id") == record.provider_id:
                continue
            taken = mine & {p.get("alias") for p in other.get("published") or []}
            if taken:
                raise ApiError(409, f"published: alias '{sorted(taken)[0]}' is already published by provider "
                               f"'{other['provider_id']}'", param="published", code="conflict")

    async def _record(self, provider_id: str) -> ProviderRecord:
        raw = await run_in_threadpool(self.store.get, provider_id)
        if raw is None:
            raise ApiError(404, f"Provider '{provider_id}' not found.", code="not_found")
        return ProviderRecord.model_validate(raw)

    async def get(self, provider_id: str) -> dict[str, Any]:
        return (await self._record(provider_id)).view()

    async def list_all(self) -> list[dict[str, Any]]:
        raw = await run_in_threadpool(self.store.list_all)
        return [ProviderRecord.model_validate(r).view() for r in raw]

    async def delete(self, provider_id: str) -> None:
        if not await run_in_threadpool(self.store.delete, provider_id):
            raise ApiError(404, f"Provider '{provider_id}' not found.", code="not_found")

    def api_key(self, record: ProviderRecord) -> str | None:
        """The plaintext key, for the backend only (never logged, never returned)."""
        if record.api_key_sealed:
            return self.sealer.open(record.api_key_sealed, self._context(record.provider_id))
        return os.environ.get(record.api_key_env) if record.api_key_env else None

    def secret_headers(self, record: ProviderRecord) -> dict[str, str]:
        if not record.secret_headers_sealed:
            return {}
        opened = self.sealer.open(record.secret_headers_sealed, self._context(record.provider_id) + ":headers")
        return dict(json.loads(opened))

    async def test(self, provider_id: str) -> dict[str, Any]:
        """A tiny real call: the first published model asked for one token (the error, if any, is reported)."""
        record = await self._record(provider_id)
        if not record.published:
            raise ApiError(400, "published: the provider publishes no model to test", param="published")
        entry = record.published[0]
        target = target_for(record, entry, await run_in_threadpool(self.api_key, record),
                            await run_in_threadpool(self.secret_headers, record))

        request = InternalRequest(model=entry.alias, messages=[Message(role="user", content=[TextPart(text="ping")])],
                                  sampling=Sampling(max_tokens=1))
        try:
            resp = await self.protocols.backend_for(target).generate(request)
        except ApiError as exc:
            return {"ok": False, "provider_id": provider_id, "alias": entry.alias, "status": exc.status,
                    "error": exc.message}
        return {"ok": True, "provider_id": provider_id, "alias": entry.alias, "model": entry.upstream_model,
                "usage": resp.usage.model_dump(exclude_none=True)}

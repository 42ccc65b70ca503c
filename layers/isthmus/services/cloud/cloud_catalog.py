"""The cloud catalog over the providers table: enabled providers' published aliases (cached a few seconds,
``ISTHMUS_CLOUD_CATALOG_SECONDS``, default 5), each alias ready to call as a chain of
:class:`ProviderTarget` (the alias, then its fallbacks). Implements :class:`isthmus.ports.control.CloudCatalog`."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from isthmus import settings
from isthmus.observability import get_logger
from isthmus.ports.providers import ProviderTarget
from isthmus.services.cloud.providers import ProviderRecord, ProviderService, target_for

logger = get_logger("cloud")


def _cache_seconds() -> float:
    return settings.env_number("ISTHMUS_CLOUD_CATALOG_SECONDS", 5.0)


class _KeyNotOpen(Exception):
    """cached_chain: a key of the chain has not been opened yet (KMS, a store read: a blocking call)."""


class ProvidersCatalog:
    """Blocking (reads the store): async callers go through a thread pool."""

    def __init__(self, providers: ProviderService, cache_seconds: float | None = None) -> None:
        self.providers = providers
        self.cache_seconds = _cache_seconds() if cache_seconds is None else cache_seconds
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, ProviderTarget], set[str]] | None = None
        self._records: dict[str, ProviderRecord] = {}
        # (provider, updated_at) -> opened key and secret headers, memory only
        self._keys: dict[tuple[str, str], tuple[str | None, dict[str, str]]] = {}

    def _load(self) -> tuple[dict[str, ProviderTarget], set[str]]:
        out: dict[str, ProviderTarget] = {}
        disabled: set[str] = set()
        for raw in self.providers.store.list_all():
            try:
                record = ProviderRecord.model_validate(raw)
            except Exception as exc:  # one bad record must not hide the others
                logger.warning("provider record skipped", extra={"provider": raw.get("provider_id"),
                                                                 "error": type(exc).__name__})
                continue
            if not record.enabled:
                disabled.update(p.alias for p in record.published)
                continue
            self._records[record.provider_id] = record
            for entry in record.published:
                out.setdefault(entry.alias, target_for(record, entry, None))
        return out, disabled - set(out)

    def _state(self) -> tuple[dict[str, ProviderTarget], set[str]]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self.cache_seconds:
                targets, disabled = self._load()
                self._cached = (now, targets, disabled)
            return self._cached[1], self._cached[2]

    def cached_state(self) -> tuple[dict[str, ProviderTarget], set[str]] | None:
        """The last loaded (enabled targets, disabled-only aliases), however old; None before the first load."""
        cached = self._cached
        return None if cached is None else (cached[1], cached[2])

    def refresh(self) -> None:
        """Read the providers table again (a background refresh of a stale state)."""
        with self._lock:
            targets, disabled = self._load()
            self._cached = (time.monotonic(), targets, disabled)

    def fresh(self) -> bool:
        """The cached state is current: reading it needs no store call (callers skip the thread hop)."""
        cached = self._cached
        return cached is not None and time.monotonic() - cached[0] < self.cache_seconds

    def targets_by_alias(self) -> dict[str, ProviderTarget]:
        """Enabled aliases -> targets *without* their key (see :meth:`chain`)."""
        return self._state()[0]

    def disabled(self, alias: str) -> bool:
        """True when only a disabled provider publishes ``alias``."""
        return alias in self._state()[1]

    def _with_key(self, target: ProviderTarget) -> ProviderTarget:
        record = self._records[target.provider_id]
        slot = (record.provider_id, record.updated_at)
        if slot not in self._keys:  # KMS decrypt once per record version
            self._keys[slot] = (self.providers.api_key(record), self.providers.secret_headers(record))
        key, secret_headers = self._keys[slot]
        return dataclasses.replace(target, api_key=key, headers={**target.headers, **secret_headers})

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def aliases(self) -> list[str]:
        return sorted(self.targets_by_alias())

    def provider_kind(self, provider_id: str) -> str | None:
        """The provider's template (openai, anthropic, openrouter), else its protocol; None when not loaded."""
        record = self._records.get(provider_id)
        return None if record is None else (record.template or record.protocol)

    def owners(self) -> dict[str, str]:
        return {alias: t.provider_id for alias, t in self.targets_by_alias().items()}

    def chain(self, alias: str) -> list[ProviderTarget]:
        """The alias's target, then its fallbacks' (each once, unknown or disabled ones skipped); [] if unknown."""
        return self._chain(self.targets_by_alias(), alias, self._with_key)

    def cached_chain(self, alias: str) -> list[ProviderTarget] | None:
        """:meth:`chain` from the last loaded state, however old (the resolver refreshes a stale one in the
        background), when it needs no store read and no key opening; else None. Async callers skip the thread
        hop with it: a cloud alias's every request would otherwise pay one."""
        cached = self._cached
        if cached is None:
            return None
        try:
            return self._chain(cached[1], alias, self._with_open_key)
        except _KeyNotOpen:
            return None

    def _with_open_key(self, target: ProviderTarget) -> ProviderTarget:
        record = self._records.get(target.provider_id)  # (a concurrent load may be replacing it)
        opened = None if record is None else self._keys.get((record.provider_id, record.updated_at))
        if opened is None:
            raise _KeyNotOpen(target.provider_id)
        return dataclasses.replace(target, api_key=opened[0], headers={**target.headers, **opened[1]})

    def _chain(self, targets: dict[str, ProviderTarget], alias: str,
               with_key: Callable[[ProviderTarget], ProviderTarget]) -> list[ProviderTarget]:
        out: list[ProviderTarget] = []
        queue, seen = [alias], set()
        while queue:
            name = queue.pop(0)
            if name in seen or name not in targets:
                continue
            seen.add(name)
            try:
                out.append(with_key(targets[name]))
            except _KeyNotOpen:
                raise
            except Exception as exc:  # a key that no longer opens: skip this link of the chain
                logger.warning("provider key could not be opened", extra={"provider": targets[name].provider_id,
                                                                          "error": type(exc).__name__})
                continue
            queue += list(targets[name].fallbacks)
        return out

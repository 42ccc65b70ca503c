"""Server-wide settings and the CoeOS configuration (both documents in the settings table)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus.control.models import GlobalSettings, SettingsUpdate, utcnow
from isthmus.ports.control import ControlStore
from isthmus.routing.coeos import CoeosConfig
from isthmus.services.inference.routing import recent_decisions

_NOT_NULLABLE = {"kv_q8_default", "system_prefix_text"}


class SettingsService:
    def __init__(self, store: ControlStore) -> None:
        self.store = store

    async def get(self) -> dict[str, Any]:
        current = await run_in_threadpool(self.store.get_settings)
        return current.model_dump(mode="json")

    async def put(self, update: SettingsUpdate) -> dict[str, Any]:
        current = await run_in_threadpool(self.store.get_settings)
        changes = update.model_dump(exclude_unset=True)
        # An explicit null resets a nullable default; for the others (kv_q8, prefix text) it means "unchanged".
        changes = {k: v for k, v in changes.items() if v is not None or k not in _NOT_NULLABLE}
        merged = GlobalSettings.model_validate({**current.model_dump(), **changes, "updated_at": utcnow()})
        await run_in_threadpool(self.store.put_settings, merged)
        # Settings are read on every request, so live pools pick them up on their next request.
        clusters = await run_in_threadpool(self.store.list_clusters)
        live = [f"{c.cluster_id}/{alias}" for c in clusters for alias in c.pools]
        return {**merged.model_dump(mode="json"), "applied_to_pools": live}

    async def get_coeos(self) -> dict[str, Any]:
        doc = await run_in_threadpool(self.store.get_doc, "coeos")
        return CoeosConfig.model_validate(doc or {}).model_dump(mode="json", by_alias=True)

    async def put_coeos(self, config: CoeosConfig) -> dict[str, Any]:
        stored = config.model_copy(update={"updated_at": utcnow()})
        doc = stored.model_dump(mode="json", by_alias=True)
        await run_in_threadpool(self.store.put_doc, "coeos", doc)
        return doc

    async def decisions(self) -> list[dict[str, Any]]:
        recent = recent_decisions()
        if recent:
            return list(reversed(recent))
        stored = await run_in_threadpool(self.store.get_doc, "coeos_decisions")
        return list(reversed(stored or []))

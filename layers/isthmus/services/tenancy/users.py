"""Users: create/list/get/patch, soft delete (their keys go inactive), blocked flag, budget assignment."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from isthmus.errors import ApiError, found
from isthmus.fields import Metadata, ModelList, Name, SafeId, StrictFlag
from isthmus.services.tenancy import hot_cache
from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.credentials import Stores
from isthmus.services.tenancy.views import money, patch_fields, wire

DEFAULT_USER = "default"


class CreateUser(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    user_id: SafeId
    alias: Name | None = None
    blocked: StrictFlag | None = None
    budget_id: SafeId | None = None
    metadata: Metadata | None = None
    allowed_models: ModelList | None = None


class UpdateUser(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    alias: Name | None = None
    blocked: StrictFlag | None = None
    budget_id: SafeId | None = None
    metadata: Metadata | None = None
    allowed_models: ModelList | None = None


def new_user_item(user_id: str, **fields: Any) -> dict[str, Any]:
    now = m.iso(m.utcnow())
    item: dict[str, Any] = {
        "user_id": user_id, "alias": None, "blocked": False, "deleted": False, "metadata": {},
        "spend": Decimal(0), "reserved": Decimal(0), "current_requests": 0, "current_tokens": 0,
        "reserved_requests": 0, "reserved_tokens": 0, "created_at": now, "updated_at": now,
    }
    item.update({k: v for k, v in fields.items() if v is not None})
    return item


def user_view(item: dict[str, Any]) -> dict[str, Any]:
    # A row written around the API (a ledger write to a user that was never created through it) may lack the
    # time stamps: it is listed with what it has rather than failing the whole list.
    created = str(item.get("created_at") or item.get("updated_at") or "")
    return wire({
        "user_id": item["user_id"], "alias": item.get("alias"), "blocked": bool(item.get("blocked", False)),
        "spend": money(item.get("spend")), "reserved": money(item.get("reserved")),
        "budget_id": item.get("budget_id"), "budget_started_at": item.get("budget_started_at"),
        "next_budget_reset_at": item.get("next_budget_reset_at"), "max_budget": item.get("max_budget"),
        "created_at": created, "updated_at": str(item.get("updated_at") or created),
        "metadata": item.get("metadata") or {}, "allowed_models": item.get("allowed_models"),
        "current_requests": int(item.get("current_requests", 0)), "current_tokens": int(item.get("current_tokens", 0)),
        "reserved_requests": int(item.get("reserved_requests", 0)),
        "reserved_tokens": int(item.get("reserved_tokens", 0)),
    })


def budget_terms(budget: dict[str, Any] | None, now: Any) -> tuple[Decimal | None, dict[str, Any]]:
    """(max_budget to copy onto the user row, period fields) for assigning ``budget`` (None = detach)."""
    if budget is None:
        return None, {"budget_id": None, "next_budget_reset_at": None, "budget_started_at": None}
    nxt = m.next_reset(now, duration_sec=budget.get("budget_duration_sec") and int(budget["budget_duration_sec"]),
                       alignment=budget.get("reset_alignment"), started_at=now)
    limit = budget.get("max_budget")
    return (None if limit is None else money(limit)), {
        "budget_id": budget["budget_id"], "budget_started_at": m.iso(now),
        "next_budget_reset_at": None if nxt is None else m.iso(nxt)}


class UserService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def _budget(self, budget_id: str) -> dict[str, Any]:
        return found(self.stores.budgets.get(budget_id), f"Budget {budget_id} not found")

    def ensure(self, user_id: str) -> None:
        """The user exists afterwards (created bare when missing; a soft-deleted one is left alone)."""
        if self.stores.users.get(user_id) is None:
            self.stores.users.put_new(new_user_item(user_id))

    def create(self, body: CreateUser) -> dict[str, Any]:
        budget = self._budget(body.budget_id) if body.budget_id else None
        item = new_user_item(body.user_id, alias=body.alias, blocked=bool(body.blocked),
                             metadata=body.metadata, allowed_models=body.allowed_models)
        if not self.stores.users.create_or_revive(item):
            raise ApiError(409, f"User {body.user_id} already exists")
        if budget is not None:
            return user_view(self._assign(body.user_id, budget, {}))
        return user_view(item)

    def _assign(self, user_id: str, budget: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
        limit, fields = budget_terms(budget, m.utcnow())
        return found(self.stores.users.set_limit(user_id, limit, {**fields, **extra}), f"User {user_id} not found")

    def live(self, user_id: str) -> dict[str, Any]:
        item = self.stores.users.get(user_id)
        if item is None or item.get("deleted"):
            raise ApiError(404, f"User {user_id} not found")
        return item

    def get(self, user_id: str) -> dict[str, Any]:
        return user_view(self.live(user_id))

    def list(self) -> list[dict[str, Any]]:
        items = [u for u in self.stores.users.scan() if not u.get("deleted")]
        return [user_view(u) for u in sorted(items, key=lambda u: (str(u.get("created_at")), str(u["user_id"])))]

    def update(self, user_id: str, body: UpdateUser) -> dict[str, Any]:
        self.live(user_id)
        hot_cache.forget_keys()  # blocked and allow-lists are read at authentication
        fields = patch_fields(body)
        fields["updated_at"] = m.iso(m.utcnow())
        if "budget_id" in fields:
            return user_view(self._assign(user_id, self._budget(fields.pop("budget_id")), fields))
        updated = self.stores.users.update(user_id, fields)
        if updated is None:
            raise ApiError(404, f"User {user_id} not found")
        return user_view(updated)

    def delete(self, user_id: str) -> None:
        """Soft delete: the row stays (its spend is history) and every key of the user goes inactive."""
        self.live(user_id)
        hot_cache.forget_keys()
        self.stores.users.update(user_id, {"deleted": True, "blocked": True, "updated_at": m.iso(m.utcnow())})
        for key in self.stores.keys.by_user(user_id):
            self.stores.keys.update(str(key["key_id"]), {"is_active": False})

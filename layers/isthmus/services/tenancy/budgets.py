"""Budgets: a per-user ceiling with a rolling (``budget_duration_sec``) or calendar (``reset_alignment``,
UTC) period. Users copy ``max_budget`` onto their own row so one item holds spend, reserved and the limit."""

from __future__ import annotations

import builtins
import uuid
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from isthmus.errors import ApiError, found
from isthmus.fields import MAX_DURATION_SEC, Money, Name, SafeId
from isthmus.services.tenancy import hot_cache
from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.credentials import Stores
from isthmus.services.tenancy.users import budget_terms
from isthmus.services.tenancy.views import money, patch_fields, wire

Alignment = Literal["calendar_day", "calendar_week", "calendar_month"]


class CreateBudget(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    budget_id: SafeId | None = None
    name: Name | None = None
    max_budget: Money | None = None
    budget_duration_sec: int | None = Field(default=None, gt=0, le=MAX_DURATION_SEC)
    reset_alignment: Alignment | None = None


class UpdateBudget(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    name: Name | None = None
    max_budget: Money | None = None
    budget_duration_sec: int | None = Field(default=None, gt=0, le=MAX_DURATION_SEC)
    reset_alignment: Alignment | None = None


def _one_period(duration: Any, alignment: Any) -> None:
    if duration is not None and alignment is not None:
        raise ApiError(400, "Set either budget_duration_sec (rolling) or reset_alignment (calendar), not both.")


def budget_view(item: dict[str, Any], users: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [u for u in users if u.get("budget_id") == item["budget_id"] and not u.get("deleted")]
    return wire({
        "budget_id": item["budget_id"], "name": item.get("name"), "max_budget": item.get("max_budget"),
        "budget_duration_sec": item.get("budget_duration_sec"), "reset_alignment": item.get("reset_alignment"),
        "request_limit": None, "token_limit": None, "organization_id": None,
        "created_at": item["created_at"], "updated_at": item.get("updated_at", item["created_at"]),
        "user_count": len(mine), "total_spend": sum((money(u.get("spend")) for u in mine), Decimal(0)),
        "total_reserved": sum((money(u.get("reserved")) for u in mine), Decimal(0)),
    })


class BudgetService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def _get(self, budget_id: str) -> dict[str, Any]:
        return found(self.stores.budgets.get(budget_id), f"Budget {budget_id} not found")

    def create(self, body: CreateBudget) -> dict[str, Any]:
        _one_period(body.budget_duration_sec, body.reset_alignment)
        now = m.iso(m.utcnow())
        item = {"budget_id": body.budget_id or uuid.uuid4().hex, "name": body.name, "max_budget": body.max_budget,
                "budget_duration_sec": body.budget_duration_sec, "reset_alignment": body.reset_alignment,
                "created_at": now, "updated_at": now}
        if not self.stores.budgets.put_new(item):
            raise ApiError(409, f"Budget {item['budget_id']} already exists")
        return budget_view(item, [])

    def get(self, budget_id: str) -> dict[str, Any]:
        return budget_view(self._get(budget_id), self.stores.users.with_budget(budget_id))

    def list(self) -> list[dict[str, Any]]:
        users = self.stores.users.scan()
        items = sorted(self.stores.budgets.scan(), key=lambda b: (str(b.get("created_at")), str(b["budget_id"])))
        return [budget_view(b, users) for b in items]

    def update(self, budget_id: str, body: UpdateBudget) -> dict[str, Any]:
        self._get(budget_id)
        fields = patch_fields(body)
        _one_period(fields.get("budget_duration_sec"), fields.get("reset_alignment"))
        # Switching period kind replaces the other one.
        if "budget_duration_sec" in fields:
            fields["reset_alignment"] = None
        if "reset_alignment" in fields:
            fields["budget_duration_sec"] = None
        fields["updated_at"] = m.iso(m.utcnow())
        updated = self.stores.budgets.update(budget_id, fields)
        if updated is None:
            raise ApiError(404, f"Budget {budget_id} not found")
        changed = {k for k in ("max_budget", "budget_duration_sec", "reset_alignment") if k in fields}
        if changed:
            self._propagate(updated, period_changed=bool(changed - {"max_budget"}))
        return self.get(budget_id)

    def _propagate(self, budget: dict[str, Any], *, period_changed: bool) -> None:
        """Copy the new limit (and period) onto every user of the budget."""
        hot_cache.forget_keys()  # budget leases taken under the old limit go back
        for user in self.stores.users.with_budget(str(budget["budget_id"])):
            limit, period = budget_terms(budget, m.utcnow())
            extra = period if period_changed else {}
            self.stores.users.set_limit(str(user["user_id"]), limit, extra)

    def delete(self, budget_id: str) -> None:
        """Users of a deleted budget are detached (no limit) rather than left pointing at nothing."""
        self._get(budget_id)
        hot_cache.forget_keys()
        for user in self.stores.users.with_budget(budget_id):
            limit, period = budget_terms(None, m.utcnow())
            self.stores.users.set_limit(str(user["user_id"]), limit, period)
        self.stores.budgets.delete(budget_id)

    def reset_logs(self, budget_id: str) -> builtins.list[dict[str, Any]]:
        """Every reset of this budget's users, newest first (each user row keeps its own history)."""
        self._get(budget_id)
        rows: builtins.list[dict[str, Any]] = []
        for user in self.stores.users.scan():
            for entry in user.get("reset_history") or []:
                if entry.get("budget_id") == budget_id:
                    rows.append({"budget_id": budget_id, "user_id": user["user_id"], "reset_at": entry["reset_at"],
                                 "previous_spend": entry.get("previous_spend", 0),
                                 "next_reset_at": entry.get("next_reset_at")})
        rows.sort(key=lambda r: str(r["reset_at"]), reverse=True)
        return [wire({"id": i + 1, **r}) for i, r in enumerate(rows)]

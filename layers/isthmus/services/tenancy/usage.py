"""Usage rows: one per request (successes, errors, cancellations and refusals), newest first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.credentials import Stores
from isthmus.services.tenancy.views import money, page, wire

SOURCE = "gateway"
_EXACT_FILTERS = ("model", "api_key_id", "status", "endpoint", "provider", "source")


def usage_view(row: Mapping[str, Any]) -> dict[str, Any]:
    prompt, completion = int(row.get("prompt_tokens", 0)), int(row.get("completion_tokens", 0))
    return wire({
        "id": row["id"], "timestamp": row["timestamp"], "request_id": row.get("request_id"),
        "api_key_id": row.get("api_key_id"), "api_key_name": row.get("api_key_name"), "user_id": row.get("user_id"),
        "model": row["model"], "provider": row.get("provider"), "endpoint": row["endpoint"],
        "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "cache_read_tokens": int(row.get("cached_tokens", 0)), "cache_write_tokens": None,
        "cache_write_1h_tokens": None, "cost": money(row.get("cost")),
        # what the backend used above the request's budget hold: recorded, never charged (spend <= max_budget)
        "unbilled_cost": None if row.get("unbilled_cost") is None else money(row["unbilled_cost"]),
        "status": row["status"],
        "status_code": None if row.get("status_code") is None else int(row["status_code"]),
        "latency_ms": None if row.get("latency_ms") is None else int(row["latency_ms"]),
        "error_message": row.get("error_message"), "source": row.get("source") or SOURCE, "source_label": None,
        "counts_toward_budget": bool(row.get("counts_toward_budget", False)),
        "bulk_editable": bool(row.get("bulk_editable", False)), "billing_meters": None, "pricing_breakdown": None,
    })


class UsageService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def rows(self, query: Mapping[str, str], user_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Every row matching the filters, newest first (un-paged)."""
        start = m.iso(m.parse_when(query["start_date"], field="start_date")) if query.get("start_date") else None
        end = m.iso(m.parse_when(query["end_date"], field="end_date")) if query.get("end_date") else None
        wanted_users = [u for u in user_ids if u]  # an empty user_id= filters nothing (the store refuses "" keys)
        found = self.stores.usage.candidates(user_ids=wanted_users, api_key_id=query.get("api_key_id") or None,
                                             start=start, end=end)
        for name in _EXACT_FILTERS:
            wanted = query.get(name)
            if wanted:
                found = [r for r in found if str(r.get(name) or (SOURCE if name == "source" else "")) == wanted]
        if query.get("status_code"):
            found = [r for r in found if str(r.get("status_code")) == str(query["status_code"])]
        found.sort(key=lambda r: (str(r["timestamp"]), str(r["id"])), reverse=True)
        return found

    def list(self, query: Mapping[str, str], user_ids: Sequence[str], skip: int, limit: int) -> list[dict[str, Any]]:
        return [usage_view(r) for r in page(self.rows(query, user_ids), skip, limit)]

    def summary(self, query: Mapping[str, str], user_ids: Sequence[str]) -> dict[str, Any]:
        rows = self.rows(query, user_ids)
        by_day: dict[str, dict[str, Any]] = {}
        by_model: dict[str, dict[str, Any]] = {}
        totals = _bucket()
        for row in rows:
            for groups, key in ((by_day, str(row["timestamp"])[:10]), (by_model, str(row["model"]))):
                _add(groups.setdefault(key, _bucket()), row)
            _add(totals, row)
        return wire({
            "totals": totals,
            "by_day": [{"day": k, **v} for k, v in sorted(by_day.items(), reverse=True)],
            "by_model": [{"model": k, **v} for k, v in sorted(by_model.items())],
        })


def _bucket() -> dict[str, Any]:
    return {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
            "cost": Decimal(0)}


def _add(bucket: dict[str, Any], row: Mapping[str, Any]) -> None:
    prompt, completion = int(row.get("prompt_tokens", 0)), int(row.get("completion_tokens", 0))
    bucket["requests"] += 1
    bucket["errors"] += 0 if row.get("status") == "success" else 1
    bucket["prompt_tokens"] += prompt
    bucket["completion_tokens"] += completion
    bucket["total_tokens"] += prompt + completion
    bucket["cost"] += money(row.get("cost"))

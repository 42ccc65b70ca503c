"""Per-model prices (USD per million tokens, Decimal), versioned by ``effective_at``."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from isthmus.errors import ApiError
from isthmus.fields import INT64_MAX, ModelName, Name, Price
from isthmus.services.tenancy import hot_cache
from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.credentials import Stores
from isthmus.services.tenancy.views import wire


class PricingTier(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    min_input_tokens: int = Field(gt=0, le=INT64_MAX)
    input_price_per_million: Price | None = Field(default=None, ge=0)
    output_price_per_million: Price | None = Field(default=None, ge=0)
    cache_read_price_per_million: Price | None = Field(default=None, ge=0)
    cache_write_price_per_million: Price | None = Field(default=None, ge=0)


class SetPricing(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="ignore")
    model_key: ModelName
    input_price_per_million: Price = Field(ge=0)
    output_price_per_million: Price = Field(ge=0)
    cache_read_price_per_million: Price | None = Field(default=None, ge=0)
    cache_write_price_per_million: Price | None = Field(default=None, ge=0)
    cache_write_1h_price_per_million: Price | None = Field(default=None, ge=0)
    effective_at: datetime | None = None
    pricing_tiers: list[PricingTier] | None = Field(default=None, max_length=64)
    unit: Name | None = "tokens"


def require_pricing() -> bool:
    return os.environ.get("ISTHMUS_REQUIRE_PRICING", "").lower() in {"1", "true", "yes", "on"}


def pricing_view(item: dict[str, Any]) -> dict[str, Any]:
    return wire({
        "model_key": item["model_key"], "effective_at": item["effective_at"],
        "input_price_per_million": item["input_price_per_million"],
        "output_price_per_million": item["output_price_per_million"],
        "cache_read_price_per_million": item.get("cache_read_price_per_million"),
        "cache_write_price_per_million": item.get("cache_write_price_per_million"),
        "cache_write_1h_price_per_million": item.get("cache_write_1h_price_per_million"),
        "pricing_tiers": item.get("pricing_tiers") or [], "unit": item.get("unit") or "tokens", "origin": "api",
        "created_at": item["created_at"], "updated_at": item.get("updated_at", item["created_at"]),
    })


def unpriced_error(model: str) -> ApiError:
    return ApiError(402, f"Model {model!r} has no price and this gateway requires one (ISTHMUS_REQUIRE_PRICING). "
                    f"Fix: POST /v1/pricing with {{\"model_key\": \"{model}\", \"input_price_per_million\": ..., "
                    "\"output_price_per_million\": ...}, or unset ISTHMUS_REQUIRE_PRICING.", code="model_unpriced")


class PricingService:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def set(self, body: SetPricing) -> dict[str, Any]:
        now = m.iso(m.utcnow())
        effective = m.iso(m.parse_when(body.effective_at)) if body.effective_at else now
        existing = self.stores.pricing.get(body.model_key, effective)
        item = body.model_dump(exclude_none=True, exclude={"effective_at", "pricing_tiers"})
        item.update({"effective_at": effective, "unit": body.unit or "tokens",
                     "pricing_tiers": [t.model_dump(exclude_none=True) for t in body.pricing_tiers or []],
                     "created_at": existing["created_at"] if existing else now, "updated_at": now})
        self.stores.pricing.put(item)
        hot_cache.forget_prices()
        return pricing_view(item)

    def effective(self, model_key: str, as_of: datetime | None = None) -> dict[str, Any] | None:
        """The stored price in force at ``as_of`` (default now), or None."""
        return self.stores.pricing.effective(model_key, m.iso(as_of or m.utcnow()))

    def get(self, model_key: str, as_of: str | None) -> dict[str, Any]:
        when = m.parse_when(as_of, field="as_of") if as_of else None
        item = self.effective(model_key, when)
        if item is None:
            raise ApiError(404, f"No pricing for model {model_key!r}" + (f" as of {as_of}" if as_of else ""))
        return pricing_view(item)

    def history(self, model_key: str) -> list[dict[str, Any]]:
        items = self.stores.pricing.history(model_key)
        if not items:
            raise ApiError(404, f"No pricing for model {model_key!r}")
        return [pricing_view(i) for i in items]

    def list(self) -> list[dict[str, Any]]:
        """The version in force now per model (a model priced only from a future date shows that one)."""
        now = m.iso(m.utcnow())
        latest: dict[str, dict[str, Any]] = {}
        for item in sorted(self.stores.pricing.all_versions(), key=lambda i: str(i["effective_at"])):
            key = str(item["model_key"])
            if key not in latest or str(item["effective_at"]) <= now:
                latest[key] = item
        return [pricing_view(latest[k]) for k in sorted(latest)]

    def delete(self, model_key: str, effective_at: str | None) -> None:
        hot_cache.forget_prices()
        if effective_at:
            when = m.iso(m.parse_when(effective_at, field="effective_at"))
            if not self.stores.pricing.delete(model_key, when):
                raise ApiError(404, f"No pricing for model {model_key!r} effective at {when}")
            return
        versions = self.stores.pricing.history(model_key)
        if not versions:
            raise ApiError(404, f"No pricing for model {model_key!r}")
        for item in versions:
            self.stores.pricing.delete(model_key, str(item["effective_at"]))

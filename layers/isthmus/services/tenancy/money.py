"""Pure tenancy logic: time stamps, budget periods (UTC), model allow-lists, and cost in Decimal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from isthmus.errors import ApiError

MILLION = Decimal(1_000_000)
ALIGNMENTS = ("calendar_day", "calendar_week", "calendar_month")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """One sortable text form for every stored time: UTC, microseconds, ``+00:00``."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def parse_when(raw: str | int | float | datetime, *, field: str = "date") -> datetime:
    """ISO 8601 (``2025-01-02T03:04:05.000000+0000``, ``Z``, naive = UTC) or epoch seconds/ms -> aware UTC."""
    if isinstance(raw, datetime):
        dt = raw
    else:
        text = str(raw).strip()
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is not None:
            dt = datetime.fromtimestamp(number / 1000 if number > 1e11 else number, UTC)
        else:
            # A '+' sent unencoded in a query string arrives as a space.
            text = text.replace(" ", "+") if "T" in text else text
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                raise ApiError(422, f"{field}: not an ISO 8601 date or epoch seconds: {text!r}") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


# ---------------------------------------------------------------- budget periods

def next_reset(now: datetime, *, duration_sec: int | None, alignment: str | None,
               started_at: datetime | None = None) -> datetime | None:
    """The first reset instant strictly after ``now``. Rolling periods count from ``started_at``
    (default ``now``); calendar periods align on UTC midnight / Monday / the 1st."""
    now = now.astimezone(UTC)
    if duration_sec:
        start = (started_at or now).astimezone(UTC)
        step = timedelta(seconds=duration_sec)
        if start > now:
            return start
        periods = int((now - start) / step) + 1
        return start + periods * step
    if alignment == "calendar_day":
        return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    if alignment == "calendar_week":
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return midnight + timedelta(days=7 - now.weekday())
    if alignment == "calendar_month":
        return datetime(now.year + (now.month == 12), now.month % 12 + 1, 1, tzinfo=UTC)
    return None


# ---------------------------------------------------------------- allow-lists

def model_allowed(model: str, allowed: Sequence[str] | None) -> bool:
    """None = any model; [] = none; entries are exact names, ``*``, or prefix wildcards (``openai:*``)."""
    if allowed is None:
        return True
    for pattern in allowed:
        if pattern == "*" or pattern == model:
            return True
        if pattern.endswith("*") and model.startswith(pattern[:-1]):
            return True
    return False


# ---------------------------------------------------------------- cost

PRICE_FIELDS = ("input_price_per_million", "output_price_per_million",
                "cache_read_price_per_million", "cache_write_price_per_million")


def _d(value: Any) -> Decimal | None:
    if value is None:
        return None
    return value if isinstance(value, Decimal) else Decimal(str(value))


def rates_for(price: Mapping[str, Any], input_tokens: int) -> dict[str, Decimal | None]:
    """The base rates, overridden by the highest tier whose ``min_input_tokens`` <= ``input_tokens``."""
    rates = {f: _d(price.get(f)) for f in PRICE_FIELDS}
    tiers = sorted(price.get("pricing_tiers") or [], key=lambda t: int(t.get("min_input_tokens", 0)))
    for tier in tiers:
        if input_tokens >= int(tier.get("min_input_tokens", 0)):
            for f in PRICE_FIELDS:
                if tier.get(f) is not None:
                    rates[f] = _d(tier[f])
    return rates


def cost(price: Mapping[str, Any] | None, *, prompt_tokens: int, completion_tokens: int,
         cached_tokens: int = 0) -> Decimal:
    """USD for one request. ``prompt_tokens`` includes ``cached_tokens`` (OpenAI's convention); cached
    tokens bill at the cache-read rate when one is set, else at the input rate. No price -> 0."""
    if price is None:
        return Decimal(0)
    if str(price.get("unit") or "tokens") == "requests":
        return (_d(price.get("input_price_per_million")) or Decimal(0)) / MILLION
    cached = max(0, min(cached_tokens, prompt_tokens))
    rates = rates_for(price, prompt_tokens)
    input_rate = rates["input_price_per_million"] or Decimal(0)
    cache_rate = rates["cache_read_price_per_million"]
    output_rate = rates["output_price_per_million"] or Decimal(0)
    total = Decimal(prompt_tokens - cached) * input_rate + Decimal(completion_tokens) * output_rate
    total += Decimal(cached) * (cache_rate if cache_rate is not None else input_rate)
    return total / MILLION


def needs_token_count(price: Mapping[str, Any] | None) -> bool:
    """Whether a hold at this price depends on token counts (priced per token, some rate above zero)."""
    if price is None or str(price.get("unit") or "tokens") == "requests":
        return False
    tiers = [price, *(price.get("pricing_tiers") or [])]
    return any((_d(t.get(f)) or Decimal(0)) > 0 for t in tiers for f in PRICE_FIELDS)


def worst_case(price: Mapping[str, Any] | None, *, input_tokens: int, max_output_tokens: int) -> Decimal:
    """The hold for an admission: an upper bound of ``cost`` for any usage up to ``input_tokens`` prompt tokens
    (however many of them cached) and ``max_output_tokens`` completion tokens. Why not ``cost`` at the bound:
    a shorter real prompt may fall in a lower tier with higher rates, and a cache-read rate may exceed the
    input rate; so every token is held at the highest rate any count up to the bound can bill it at."""
    if price is None:
        return Decimal(0)
    input_tokens, max_output_tokens = max(0, input_tokens), max(0, max_output_tokens)
    if str(price.get("unit") or "tokens") == "requests":
        return cost(price, prompt_tokens=input_tokens, completion_tokens=max_output_tokens)
    thresholds = {0} | {int(t.get("min_input_tokens", 0)) for t in price.get("pricing_tiers") or []}
    candidates = [rates_for(price, n) for n in thresholds if n <= input_tokens]
    input_rate = max(max(r["input_price_per_million"] or Decimal(0), r["cache_read_price_per_million"] or Decimal(0))
                     for r in candidates)
    output_rate = max(r["output_price_per_million"] or Decimal(0) for r in candidates)
    return (Decimal(input_tokens) * input_rate + Decimal(max_output_tokens) * output_rate) / MILLION


def capped(charge: Decimal, hold: Decimal) -> tuple[Decimal, Decimal]:
    """(what is charged, what is left unbilled): never more than the hold."""
    if charge <= hold:
        return charge, Decimal(0)
    return hold, charge - hold

"""Pure tenancy logic: where keys are read from, allow-lists, budget periods in UTC, cost in Decimal."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from starlette.datastructures import Headers

from isthmus.auth import constant_time_equal, extract_token, hash_key, is_loopback
from isthmus.errors import ApiError
from isthmus.services.tenancy.money import cost, model_allowed, next_reset, parse_when, worst_case
from isthmus.services.tenancy.views import paging

# ------------------------------------------------------------------ headers


@pytest.mark.parametrize(
    ("headers", "token"),
    [
        ({"Otari-Key": "gw-raw"}, "gw-raw"),
        ({"Otari-Key": "Bearer gw-b"}, "gw-b"),
        ({"Authorization": "Bearer gw-auth"}, "gw-auth"),
        ({"x-api-key": "gw-anthropic"}, "gw-anthropic"),
        ({"AnyLLM-Key": "gw-any"}, "gw-any"),
        ({"X-AnyLLM-Key": "Bearer gw-xany"}, "gw-xany"),
        ({}, None),
        # the order: Otari-Key, Authorization, x-api-key, AnyLLM-Key, X-AnyLLM-Key
        ({"X-AnyLLM-Key": "5", "AnyLLM-Key": "4", "x-api-key": "3", "Authorization": "Bearer 2",
          "Otari-Key": "1"}, "1"),
        ({"X-AnyLLM-Key": "5", "AnyLLM-Key": "4", "x-api-key": "3", "Authorization": "Bearer 2"}, "2"),
        ({"X-AnyLLM-Key": "5", "AnyLLM-Key": "4", "x-api-key": "3"}, "3"),
        ({"X-AnyLLM-Key": "5", "AnyLLM-Key": "4"}, "4"),
    ],
)
def test_key_is_read_from_the_first_header_present(headers: dict[str, str], token: str | None) -> None:
    assert extract_token(headers) == token
    # the same from a request's own headers (Starlette's raw list, read without decoding every header),
    # whatever the case of the names a server passed on
    raw = [(k.encode(), v.encode()) for k, v in headers.items()]
    assert extract_token(Headers(raw=raw)) == token
    assert extract_token(Headers(raw=[(k.lower(), v) for k, v in raw])) == token


@pytest.mark.parametrize("value", ["Basic dXNlcjpwYXNz", "Token abc", "Bearer", "Bearer   "])
def test_authorization_with_another_scheme_is_401_invalid_header_format(value: str) -> None:
    with pytest.raises(ApiError) as err:
        extract_token({"Authorization": value})
    assert err.value.status == 401 and err.value.message == "Invalid header format"


def test_hashing_is_keyed_by_the_pepper_and_comparison_is_exact() -> None:
    assert hash_key("gw-a", "p1") != hash_key("gw-a", "p2")
    assert hash_key("gw-a", "p1") == hash_key("gw-a", "p1")
    assert constant_time_equal("sk-master", "sk-master")
    assert not constant_time_equal("sk-master", "sk-masteR")
    assert not constant_time_equal("sk-master", "sk-master-longer")


@pytest.mark.parametrize(("host", "loop"), [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
                                            ("localhost", True), ("10.0.0.2", False), ("203.0.113.7", False),
                                            (None, False), ("garbage", False)])
def test_loopback_detection(host: str | None, loop: bool) -> None:
    assert is_loopback(host) is loop


# ------------------------------------------------------------------ allow-lists


@pytest.mark.parametrize(
    ("model", "allowed", "ok"),
    [
        ("openai:gpt-4o", None, True),
        ("openai:gpt-4o", [], False),
        ("openai:gpt-4o", ["*"], True),
        ("openai:gpt-4o", ["openai:*"], True),
        ("anthropic:claude", ["openai:*"], False),
        ("openai:gpt-4o-mini", ["openai:gpt-4o"], False),
        ("openai:gpt-4o-mini", ["openai:gpt-4o*"], True),
        ("mlx/qwen3", ["mlx/*", "openai:gpt-4o"], True),
    ],
)
def test_model_allow_lists(model: str, allowed: list[str] | None, ok: bool) -> None:
    assert model_allowed(model, allowed) is ok


# ------------------------------------------------------------------ periods


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "alignment", "expected"),
    [
        ("2025-03-04T23:59:59", "calendar_day", "2025-03-05T00:00:00"),
        ("2025-03-04T00:00:00", "calendar_day", "2025-03-05T00:00:00"),
        ("2025-03-05T12:00:00", "calendar_week", "2025-03-10T00:00:00"),  # Wednesday -> next Monday
        ("2025-03-10T00:00:00", "calendar_week", "2025-03-17T00:00:00"),  # on a Monday -> the next one
        ("2025-01-31T10:00:00", "calendar_month", "2025-02-01T00:00:00"),
        ("2025-12-15T10:00:00", "calendar_month", "2026-01-01T00:00:00"),
        ("2024-02-29T23:00:00", "calendar_month", "2024-03-01T00:00:00"),
    ],
)
def test_calendar_periods_align_in_utc(now: str, alignment: str, expected: str) -> None:
    assert next_reset(at(now), duration_sec=None, alignment=alignment) == at(expected)


def test_calendar_periods_use_utc_whatever_the_callers_zone() -> None:
    from datetime import timedelta, timezone

    tokyo = datetime(2025, 3, 5, 8, 0, tzinfo=timezone(timedelta(hours=9)))  # 2025-03-04 23:00 UTC
    assert next_reset(tokyo, duration_sec=None, alignment="calendar_day") == at("2025-03-05T00:00:00")


def test_rolling_periods_step_from_their_start() -> None:
    start = at("2025-01-01T00:00:00")
    assert next_reset(at("2025-01-01T00:00:00"), duration_sec=3600, alignment=None, started_at=start) == \
        at("2025-01-01T01:00:00")
    # a reset seen late skips the periods that passed with no request
    assert next_reset(at("2025-01-01T05:30:00"), duration_sec=3600, alignment=None, started_at=start) == \
        at("2025-01-01T06:00:00")
    assert next_reset(at("2025-01-01T05:30:00"), duration_sec=None, alignment=None) is None


def test_dates_from_query_strings() -> None:
    assert parse_when("2025-01-02T03:04:05.000000+0000") == at("2025-01-02T03:04:05")
    assert parse_when("2025-01-02T03:04:05.000000 0000") == at("2025-01-02T03:04:05")  # '+' lost to a space
    assert parse_when("2025-01-02T03:04:05Z") == at("2025-01-02T03:04:05")
    assert parse_when("1735787045") == at("2025-01-02T03:04:05")
    assert parse_when("1735787045000") == at("2025-01-02T03:04:05")
    with pytest.raises(ApiError) as err:
        parse_when("yesterday", field="start_date")
    assert err.value.status == 422


# ------------------------------------------------------------------ cost


PRICE = {"input_price_per_million": Decimal("0.15"), "output_price_per_million": Decimal("0.6"),
         "cache_read_price_per_million": Decimal("0.075")}


def test_cost_is_exact_decimal() -> None:
    c = cost(PRICE, prompt_tokens=1000, completion_tokens=500, cached_tokens=0)
    assert isinstance(c, Decimal)
    assert c == Decimal("0.00045")  # 1000*0.15/1e6 + 500*0.6/1e6
    # a million of the same request adds up exactly, with no float drift
    assert c * 1_000_000 == Decimal("450")


def test_cached_tokens_bill_at_the_cache_read_rate() -> None:
    c = cost(PRICE, prompt_tokens=1000, completion_tokens=0, cached_tokens=400)
    assert c == (Decimal(600) * Decimal("0.15") + Decimal(400) * Decimal("0.075")) / Decimal(1_000_000)
    no_cache_rate = {k: v for k, v in PRICE.items() if k != "cache_read_price_per_million"}
    assert cost(no_cache_rate, prompt_tokens=1000, completion_tokens=0, cached_tokens=400) == Decimal("0.00015")


def test_tiers_switch_the_whole_request_rate() -> None:
    tiered = {**PRICE, "pricing_tiers": [{"min_input_tokens": 200_000, "input_price_per_million": Decimal("0.3")}]}
    assert cost(tiered, prompt_tokens=199_999, completion_tokens=0) == Decimal(199_999) * Decimal("0.15") / 10**6
    assert cost(tiered, prompt_tokens=200_000, completion_tokens=0) == Decimal("0.06")


def test_worst_case_and_free_models() -> None:
    assert worst_case(PRICE, input_tokens=1000, max_output_tokens=1000) == Decimal("0.00075")
    assert worst_case(None, input_tokens=10**6, max_output_tokens=10**6) == 0
    assert cost(None, prompt_tokens=5, completion_tokens=5) == 0


@pytest.mark.parametrize(("query", "ok"), [({}, (0, 100)), ({"skip": "5", "limit": "1000"}, (5, 1000)),
                                           ({"limit": "0"}, None), ({"limit": "1001"}, None),
                                           ({"skip": "-1"}, None), ({"limit": "x"}, None)])
def test_paging_bounds(query: dict[str, str], ok: tuple[int, int] | None) -> None:
    if ok is not None:
        assert paging(query) == ok
        return
    with pytest.raises(ApiError) as err:
        paging(query)
    assert err.value.status == 422

"""Drives the control surface with the real `otari` client (whichever version is first on sys.path).

Run by test_otari_client.py in a subprocess: ``python otari_driver.py BASE SEED_USER`` with the master key in
ISTHMUS_TEST_MASTER. Every call goes through the client's own models, so a field the client requires and we
do not send fails here. Prints one JSON line of findings; exits non-zero on the first surprise.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from typing import Any

from otari import OtariClient
from otari._client import (
    CreateBudgetRequest,
    CreateKeyRequest,
    CreateUserRequest,
    SetPricingRequest,
    UpdateBudgetRequest,
    UpdateKeyRequest,
    UpdateUserRequest,
)
from otari.errors import OtariError


def expect_status(status: int, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except OtariError as exc:
        assert getattr(exc, "status_code", None) == status, (status, exc)
        return
    raise AssertionError(f"expected HTTP {status}")


def main(base: str, seed_user: str, master: str) -> dict[str, Any]:
    found: dict[str, Any] = {"otari": version("otari")}
    cp = OtariClient(api_base=base, api_key="unused", admin_key=master).control_plane
    tag = uuid.uuid4().hex[:6]

    # budgets
    budget = cp.budgets.create(CreateBudgetRequest(max_budget=25.0, reset_alignment=None, budget_duration_sec=86400,
                                                   name=f"b-{tag}"))
    assert budget is not None and budget.budget_id and budget.max_budget == 25
    budget = cp.budgets.update(budget.budget_id, UpdateBudgetRequest(max_budget=30))
    assert budget.max_budget == 30
    assert any(b.budget_id == budget.budget_id for b in cp.budgets.list(skip=0, limit=1000))
    assert cp.budgets.get(budget.budget_id).budget_duration_sec == 86400

    # users
    user_id = f"u-{tag}"
    user = cp.users.create(CreateUserRequest(user_id=user_id, alias="Ada", budget_id=budget.budget_id,
                                             metadata={"team": "ml"}))
    assert user is not None and user.user_id == user_id and user.spend == 0 and user.budget_id == budget.budget_id
    expect_status(409, cp.users.create, CreateUserRequest(user_id=user_id))
    user = cp.users.update(user_id, UpdateUserRequest(blocked=True))
    assert user.blocked is True
    assert any(u.user_id == user_id for u in cp.users.list(skip=0, limit=100))
    assert cp.users.get(user_id).alias == "Ada"
    found["budget_user_count"] = cp.budgets.get(budget.budget_id).user_count

    # keys
    created = cp.keys.create(CreateKeyRequest(key_name=f"k-{tag}", user_id=user_id, metadata={"a": 1},
                                              allowed_models=["openai:*"],
                                              expires_at=datetime.now(UTC) + timedelta(days=1)))
    assert created is not None and created.key.startswith("gw-") and created.is_active
    found["key_prefix_ok"] = created.key.startswith(created.key_prefix or "?")
    info = cp.keys.get(created.id)
    assert info.key_name == f"k-{tag}" and info.allowed_models == ["openai:*"] and info.user_id == user_id
    info = cp.keys.update(created.id, UpdateKeyRequest(key_name="renamed", is_active=False))
    assert info.key_name == "renamed" and info.is_active is False
    assert any(k.id == created.id for k in cp.keys.list(skip=0, limit=1000))
    rotate = getattr(cp.keys.raw, "keys_rotate_key", None) or cp.keys.raw.rotate_key_v1_keys_key_id_rotate_post
    rotated = rotate(created.id)
    assert rotated.id == created.id and rotated.key != created.key
    default_key = cp.keys.create(CreateKeyRequest())
    assert default_key.user_id == "default"
    cp.keys.delete(default_key.id)
    expect_status(404, cp.keys.get, default_key.id)
    found["keys"] = "ok"

    # pricing (model keys with ':' and '/' travel percent-encoded in the path)
    for model in (f"openai:gpt-{tag}", f"mlx/qwen-{tag}"):
        old = cp.pricing.set(SetPricingRequest(model_key=model, input_price_per_million=0.15,
                                               output_price_per_million=0.6,
                                               effective_at=datetime(2024, 1, 1, tzinfo=UTC)))
        new = cp.pricing.set(SetPricingRequest(model_key=model, input_price_per_million=0.2,
                                               output_price_per_million=0.8, cache_read_price_per_million=0.05,
                                               effective_at=datetime(2025, 1, 1, tzinfo=UTC)))
        assert old is not None and new is not None
        assert cp.pricing.get(model).input_price_per_million == 0.2
        assert cp.pricing.get(model, as_of=datetime(2024, 6, 1, tzinfo=UTC)).input_price_per_million == 0.15
        history = cp.pricing.get_history(model)
        assert [h.input_price_per_million for h in history] == [0.2, 0.15]
        assert any(p.model_key == model for p in cp.pricing.list())
        cp.pricing.delete(model)
        expect_status(404, cp.pricing.get, model)
    found["pricing"] = "ok"

    # usage (rows seeded by the test through TenancyGate)
    rows = cp.usage.list(start_date=datetime(2020, 1, 1, tzinfo=UTC), user_id=seed_user, skip=0, limit=100)
    assert rows and all(r.user_id == seed_user for r in rows)
    found["usage_rows"] = len(rows)
    found["usage_statuses"] = sorted({r.status for r in rows})
    found["user_usage_rows"] = len(cp.users.get_usage(seed_user))
    future = cp.usage.list(start_date=datetime.now(UTC) + timedelta(days=1), user_id=seed_user)
    found["future_rows"] = len(future)

    # deletes
    cp.users.delete(user_id)
    expect_status(404, cp.users.get, user_id)
    cp.budgets.delete(budget.budget_id)
    expect_status(404, cp.budgets.get, budget.budget_id)

    # the master key is required
    bad = OtariClient(api_base=base, api_key="unused", admin_key="not-the-master").control_plane
    expect_status(401, bad.keys.list)
    return found


if __name__ == "__main__":
    import os

    print(json.dumps(main(sys.argv[1], sys.argv[2], os.environ["ISTHMUS_TEST_MASTER"])), flush=True)

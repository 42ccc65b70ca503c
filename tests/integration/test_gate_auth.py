"""TenancyGate.authenticate/admit decisions on DynamoDB Local: key states, users, allow-lists, limits, modes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from isthmus import wiring
from isthmus.errors import ApiError
from isthmus.services.tenancy import credentials
from isthmus.services.tenancy import money as m
from isthmus.services.tenancy.credentials import Credentials
from isthmus.services.tenancy.gate import TenancyGate
from isthmus.services.tenancy.keys import CreateKey, KeyService, UpdateKey, bootstrap_master_key
from isthmus.services.tenancy.users import CreateUser, UpdateUser, UserService

pytestmark = pytest.mark.integration
T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def wrap() -> T:
        return await coro

    return asyncio.run(wrap())


def new_key(**fields: Any) -> dict[str, Any]:
    stores = wiring.stores()
    return KeyService(stores, Credentials(stores)).create(CreateKey(**fields))


def status_of(coro: Awaitable[Any]) -> tuple[int, str, dict[str, str]]:
    try:
        run(coro)
    except ApiError as exc:
        return exc.status, exc.message, exc.headers
    return 200, "", {}


@pytest.fixture()
def keyed(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", "sk-master-test")
    return "sk-master-test"


def test_key_states_map_to_401_and_403(ddb_tables: str, keyed: str) -> None:
    gate = wiring.new_gate()
    stores = wiring.stores()
    ks = KeyService(stores, Credentials(stores))
    inactive = new_key()
    ks.update(inactive["id"], UpdateKey(is_active=False))
    expired = new_key()  # a create refuses a past expiry: the key expires in the store, as time would do
    stores.keys.update(expired["id"], {"expires_at": m.iso(datetime.now(UTC) - timedelta(seconds=1))})
    UserService(stores).create(CreateUser(user_id="blocked-u"))
    blocked = new_key(user_id="blocked-u")
    UserService(stores).update("blocked-u", UpdateUser(blocked=True))
    assert status_of(gate.authenticate({}))[:2] == (401, "Missing API key")
    assert status_of(gate.authenticate({"x-api-key": "gw-unknown"}))[:2] == (401, "Invalid API key")
    assert status_of(gate.authenticate({"x-api-key": inactive["key"]}))[:2] == (401, "API key is inactive")
    assert status_of(gate.authenticate({"x-api-key": expired["key"]}))[:2] == (401, "API key has expired")
    assert status_of(gate.authenticate({"x-api-key": blocked["key"]}))[0] == 403
    assert run(gate.authenticate({"Authorization": f"Bearer {keyed}"})).kind == "master"


def test_soft_deleted_user_keys_go_inactive(ddb_tables: str, keyed: str) -> None:
    stores = wiring.stores()
    UserService(stores).create(CreateUser(user_id="leaver"))
    key = new_key(user_id="leaver")
    UserService(stores).delete("leaver")
    assert status_of(wiring.new_gate().authenticate({"x-api-key": key["key"]}))[:2] == (401, "API key is inactive")
    with pytest.raises(ApiError) as err:
        UserService(stores).get("leaver")
    assert err.value.status == 404


def test_allow_lists_from_key_or_user(ddb_tables: str, keyed: str) -> None:
    gate = wiring.new_gate()
    key = new_key(allowed_models=["openai:*"])
    p = run(gate.authenticate({"x-api-key": key["key"]}))
    assert run(gate.admit(p, model="openai:gpt-4o", endpoint="e", input_tokens_estimate=1, max_output_tokens=1))
    assert status_of(gate.admit(p, model="anthropic:claude", endpoint="e", input_tokens_estimate=1,
                                max_output_tokens=1))[0] == 403
    UserService(wiring.stores()).create(CreateUser(user_id="narrow", allowed_models=[]))
    p = run(gate.authenticate({"x-api-key": new_key(user_id="narrow")["key"]}))
    assert status_of(gate.admit(p, model="any", endpoint="e", input_tokens_estimate=1, max_output_tokens=1))[0] == 403


def test_rpm_and_tpm_limits_answer_429_with_headers(ddb_tables: str, keyed: str) -> None:
    gate = wiring.new_gate(clock=lambda: 1_800_000_030.0)  # 30 s into a minute
    p = run(gate.authenticate({"x-api-key": new_key(rpm_limit=2, tpm_limit=1000)["key"]}))
    ok = run(gate.admit(p, model="m", endpoint="e", input_tokens_estimate=100, max_output_tokens=100))
    assert ok.headers["X-RateLimit-Remaining-Requests"] == "1"
    assert ok.headers["X-RateLimit-Limit-Requests"] == "2"
    # too many tokens for what is left of the minute
    status, _, headers = status_of(gate.admit(p, model="m", endpoint="e", input_tokens_estimate=900,
                                              max_output_tokens=100))
    assert status == 429 and headers["Retry-After"] == "30" and headers["X-RateLimit-Limit-Tokens"] == "1000"
    run(gate.admit(p, model="m", endpoint="e", input_tokens_estimate=1, max_output_tokens=1))
    status, _, headers = status_of(gate.admit(p, model="m", endpoint="e", input_tokens_estimate=1,
                                              max_output_tokens=1))
    assert status == 429 and headers["X-RateLimit-Remaining-Requests"] == "0"


def test_open_mode_lets_anyone_in_as_anonymous(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)
    gate = TenancyGate(wiring.stores(), Credentials(wiring.stores()))
    if run(gate.creds.keyed()):
        pytest.skip("a stored master key exists in this session's tables")
    assert run(gate.authenticate({})).kind == "anonymous"
    assert run(gate.authenticate({"Authorization": "Bearer sk-no-key-required"})).kind == "anonymous"
    key = new_key()
    assert run(gate.authenticate({"x-api-key": key["key"]})).key_id == key["id"]


def test_bootstrap_master_key_once(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)
    stores = wiring.stores()
    first = bootstrap_master_key(stores)
    assert first is not None and first.master_key.startswith("sk-master-") and first.api_key.startswith("gw-")
    # the store holds only the hash; a second start prints nothing new
    assert stores.settings.value(credentials.MASTER_HASH_SETTING) != first.master_key
    assert bootstrap_master_key(stores) is None
    gate = TenancyGate(stores, Credentials(stores))
    assert run(gate.authenticate({"Authorization": f"Bearer {first.master_key}"})).kind == "master"
    assert run(gate.authenticate({"x-api-key": first.api_key})).user_id == "default"
    assert status_of(gate.authenticate({}))[0] == 401
    # leave the session's tables in open mode for the other tests
    stores.settings.delete(credentials.MASTER_HASH_SETTING)
    wiring._credentials.clear()


def test_a_key_revoked_elsewhere_is_refused_after_one_background_refresh(ddb_tables: str, keyed: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.services.tenancy import hot_cache

    monkeypatch.setattr(hot_cache.principals, "ttl_s", 0.2)
    gate = wiring.new_gate()
    key = new_key()
    headers = {"x-api-key": key["key"]}

    async def scenario() -> list[tuple[int, str]]:
        answers = []
        # given a key this process has just seen (cached)
        await gate.authenticate(headers)
        # when another instance deactivates it (straight in the table: this process's cache is not told)
        wiring.stores().keys.update(key["id"], {"is_active": False})
        await asyncio.sleep(0.3)
        for _ in range(2):
            try:
                # then the first request past the TTL is still answered from the stale entry, off the store
                await gate.authenticate(headers)
                answers.append((200, ""))
            except ApiError as exc:
                answers.append((exc.status, exc.message))
            await asyncio.sleep(0.2)  # ... while one background read finds the key revoked
        return answers

    # and the next one is refused with the reason
    assert asyncio.run(scenario()) == [(200, ""), (401, "API key is inactive")]


def test_open_mode_reads_an_sdk_placeholder_key_once_and_refuses_it_once_keyed(
        ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)
    stores = wiring.stores()
    gate = TenancyGate(stores, Credentials(stores))
    if run(gate.creds.keyed()):
        pytest.skip("a stored master key exists in this session's tables")
    reads: list[str] = []
    find_by_hash = stores.keys.find_by_hash

    def counted(key_hash: str) -> Any:
        reads.append(key_hash)
        return find_by_hash(key_hash)

    monkeypatch.setattr(stores.keys, "find_by_hash", counted)
    placeholder = {"Authorization": "Bearer sk-placeholder-of-an-sdk"}
    # given an open gateway, when an SDK sends its placeholder key with every request
    kinds = [run(gate.authenticate(placeholder)).kind for _ in range(20)]
    # then every request is anonymous and the key table was read for the first one only
    assert kinds == ["anonymous"] * 20
    assert len(reads) == 1
    # when the gateway becomes keyed, the cached "no such key" counts for nothing: the placeholder is refused
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", "sk-master-test")
    assert status_of(gate.authenticate(placeholder))[:2] == (401, "Invalid API key")

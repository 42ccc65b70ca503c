"""Issue 14 on DynamoDB Local: input too big or malformed for the store is a 4xx before any write (never a 503
"store unavailable" or a 500), and the key list survives any row already stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from isthmus import settings
from isthmus.adapters import dynamodb

pytestmark = pytest.mark.integration
MASTER = "sk-master-badinput"
AUTH = {"Authorization": f"Bearer {MASTER}", "content-type": "application/json"}


@pytest.fixture()
def apps(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, TestClient]]:
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", MASTER)
    from functions.admin.app import app as admin
    from functions.inference.app import app as inference
    from functions.keys.app import app as keys
    from functions.pricing.app import app as pricing
    from functions.users.app import app as users

    yield {n: TestClient(a, raise_server_exceptions=False) for n, a in
           (("keys", keys), ("pricing", pricing), ("users", users), ("admin", admin), ("inference", inference))}


def key_ids(keys: TestClient) -> set[str]:
    listed = keys.get("/v1/keys?limit=1000", headers=AUTH)
    assert listed.status_code == 200, listed.text
    return {k["id"] for k in listed.json()}


def test_a_bad_key_name_is_refused_and_stores_nothing(apps: dict[str, TestClient]) -> None:
    keys = apps["keys"]
    before = key_ids(keys)
    # given the probe's key names: a lone surrogate, NUL, 1 MB, and a key expiring in 1969
    for raw in (b'{"key_name": "\\ud800"}', b'{"key_name": "a\\u0000b"}',
                b'{"key_name": "' + b"k" * 1_000_000 + b'"}', b'{"key_name": "k", "expires_at": -1}',
                b'{"key_name": "k", "metadata": ' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}"):
        r = keys.post("/v1/keys", headers=AUTH, content=raw)
        # then a 4xx with a detail, and no key was written
        assert r.status_code in (400, 413, 422), (r.status_code, r.text[:200])
        assert "detail" in r.json()
    r = keys.post("/v1/keys", headers=AUTH, content=b'{"key_name": "' + b"k" * (50 * 1024 * 1024) + b'"}')
    assert r.status_code == 413
    assert key_ids(keys) == before


def test_the_key_list_survives_rows_stored_before_input_was_checked(apps: dict[str, TestClient]) -> None:
    keys = apps["keys"]
    good = keys.post("/v1/keys", headers=AUTH, json={"key_name": "fine"}).json()["id"]
    # given rows as an older version stored them: a lone surrogate in the name, and one missing fields
    table = settings.table_name("keys")
    bad_name, broken = uuid.uuid4().hex, uuid.uuid4().hex
    dynamodb.client().put_item(TableName=table, Item={
        "key_id": {"S": bad_name}, "key_name": {"S": "\ud800"}, "created_at": {"S": "2025-01-01T00:00:00+00:00"},
        "is_active": {"BOOL": True}, "key_hash": {"S": uuid.uuid4().hex}})
    dynamodb.client().put_item(TableName=table, Item={"key_id": {"S": broken}, "key_hash": {"S": uuid.uuid4().hex}})
    # when listed, then 200 with every row, the bad ones included (so they can be seen and deleted by id)
    listed = keys.get("/v1/keys?limit=1000", headers=AUTH)
    assert listed.status_code == 200
    rows = {k["id"]: k for k in json.loads(listed.content)}
    assert {good, bad_name, broken} <= set(rows)
    assert rows[broken]["invalid_row"] is True
    assert keys.delete(f"/v1/keys/{bad_name}", headers=AUTH).status_code == 204
    assert keys.delete(f"/v1/keys/{broken}", headers=AUTH).status_code == 204


def test_the_user_list_survives_a_row_written_around_the_api(apps: dict[str, TestClient]) -> None:
    # given a user row with no time stamps (as a ledger write to a user never created through the API leaves)
    bare = f"bare-{uuid.uuid4().hex[:6]}"
    dynamodb.client().put_item(TableName=settings.table_name("users"), Item={
        "user_id": {"S": bare}, "spend": {"N": "0.5"}, "reserved": {"N": "0"}})
    # when the users are listed, then 200 with that row in it (so it can be seen and deleted)
    listed = apps["users"].get("/v1/users?limit=1000", headers=AUTH)
    assert listed.status_code == 200
    rows = {u["user_id"]: u for u in listed.json()}
    assert bare in rows and rows[bare]["spend"] == 0.5 and rows[bare]["created_at"] == ""
    assert apps["users"].delete(f"/v1/users/{bare}", headers=AUTH).status_code in (200, 204)


def test_records_too_big_for_dynamodb_are_4xx_not_store_unavailable(apps: dict[str, TestClient]) -> None:
    price = {"input_price_per_million": 1, "output_price_per_million": 1}
    # a 1 MB model key, a price of 1e308, a user id that is a path, a 100k alias
    assert apps["pricing"].post("/v1/pricing", headers=AUTH,
                                json={"model_key": "m" * 1_000_000, **price}).status_code in (400, 422)
    assert apps["pricing"].post("/v1/pricing", headers=AUTH,
                                json={"model_key": "m", **price, "input_price_per_million": 1e308}).status_code == 422
    assert apps["users"].post("/v1/users", headers=AUTH, json={"user_id": "../../x"}).status_code == 422
    assert apps["users"].post("/v1/users", headers=AUTH,
                              json={"user_id": f"u-{uuid.uuid4().hex[:6]}", "alias": "a" * 100_000}).status_code == 400
    assert apps["users"].get("/v1/users/" + "u" * 5000, headers=AUTH).status_code == 414


def test_a_provider_header_with_crlf_is_refused_and_nothing_is_stored(apps: dict[str, TestClient]) -> None:
    admin = apps["admin"]
    pid = f"p{uuid.uuid4().hex[:8]}"
    body = {"protocol": "openai", "api_base": "http://127.0.0.1:9", "headers": {"X-Org": "a\r\nX-Injected: 1"}}
    r = admin.put(f"/admin/providers/{pid}", json=body)
    assert r.status_code == 400 and "headers" in r.json()["detail"]
    big = {**body, "headers": {"X-Org": "v" * 500_000}}
    assert admin.put(f"/admin/providers/{pid}", json=big).status_code == 400
    assert admin.get(f"/admin/providers/{pid}").status_code == 404


def test_a_100k_previous_response_id_is_a_400(apps: dict[str, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_MASTER_KEY")
    body = {"model": "m", "input": "hi", "previous_response_id": "r" * 100_000}
    r = apps["inference"].post("/v1/responses", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "previous_response_id"

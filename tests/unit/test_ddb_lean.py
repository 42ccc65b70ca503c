"""The lean DynamoDB writes (isthmus.adapters.ddb_lean) against a scripted HTTP server on loopback: what reaches
the store (the target, the signed headers, the idempotency token), how answers come back (the botocore client's
own modeled errors), what is tried again (throttles, 5xx, a kept-alive connection closed meanwhile) and what is
not. The signature is checked against botocore's own SigV4 signer on the same request."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest

from isthmus.adapters import aws, ddb_lean, dynamodb
from isthmus.adapters.ddb_lean import LeanDynamo
from isthmus.adapters.store_breaker import StoreBreaker
from isthmus.errors import StoreCircuitOpen

ITEMS = [{"Put": {"TableName": "usage", "Item": {"id": {"S": "r1"}, "tokens": {"N": "12"}},
                  "ConditionExpression": "attribute_not_exists(id)"}}]


class ScriptedStore:
    """Answers each POST with the next scripted (status, JSON body) and records what it was sent."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, Any]]] = []
        self.seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.raw: list[bytes] = []
        self.close_after_answer = False
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                store.raw.append(raw)
                body = json.loads(raw)
                store.seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status, answer = store.script.pop(0) if store.script else (200, {})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("x-amzn-RequestId", f"req-{len(store.seen)}")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if store.close_after_answer:  # as a store closing an idle kept-alive connection would
                    self.close_connection = True

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def store() -> Iterator[ScriptedStore]:
    scripted = ScriptedStore()
    yield scripted
    scripted.close()


def lean_on(endpoint: str, token: str | None = None, breaker: StoreBreaker | None = None,
            sleeps: list[float] | None = None) -> LeanDynamo:
    client = aws.client("dynamodb", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                        aws_secret_access_key="secret", aws_session_token=token)
    return LeanDynamo(client, breaker, sleep=(sleeps if sleeps is not None else []).append)


def cancelled(*codes: str) -> tuple[int, dict[str, Any]]:
    return 400, {"__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                 "Message": "Transaction cancelled", "CancellationReasons": [{"Code": c} for c in codes]}


def test_the_signature_is_botocores_for_the_same_request() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json.dumps({"TransactItems": ITEMS}).encode()
    for token in (None, "session-token"):
        # given the headers we sign at a fixed instant
        ours = ddb_lean.sign("AKIDEXAMPLE", "secret", token, "eu-west-1", "127.0.0.1:8000", "/",
                             "DynamoDB_20120810.TransactWriteItems", body, "20261130T230000Z")
        # when botocore's signer signs the same request at the same instant
        request = AWSRequest(method="POST", url="http://127.0.0.1:8000/", data=body, headers={
            "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.TransactWriteItems"})
        from datetime import datetime
        with mock.patch("botocore.auth.get_current_datetime", return_value=datetime(2026, 11, 30, 23, 0, 0)):
            SigV4Auth(Credentials("AKIDEXAMPLE", "secret", token), "dynamodb", "eu-west-1").add_auth(request)
        # then the authorization is the same, signed headers and signature
        assert ours["authorization"] == request.headers["Authorization"]
        assert ours.get("x-amz-security-token") == token


def test_a_transaction_is_sent_signed_with_its_target_and_an_idempotency_token(store: ScriptedStore) -> None:
    # given a lean writer with session credentials
    lean = lean_on(store.endpoint, token="tok")
    # when it writes a transaction twice
    lean.transact_write_items(TransactItems=ITEMS)
    lean.transact_write_items(TransactItems=ITEMS)
    # then the store got DynamoDB's JSON body as given, the target, the signature and a fresh token each time
    (h1, b1), (_, b2) = store.seen
    assert h1["x-amz-target"] == "DynamoDB_20120810.TransactWriteItems"
    assert h1["content-type"] == "application/x-amz-json-1.0" and h1["x-amz-security-token"] == "tok"
    assert h1["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/dynamodb/aws4_request" in h1["authorization"]
    assert h1["host"] == store.endpoint.removeprefix("http://")
    assert b1["TransactItems"] == ITEMS and len(b1["ClientRequestToken"]) == 36
    assert b1["ClientRequestToken"] != b2["ClientRequestToken"]
    # and the signature (its key cached across calls) is the one derived afresh for what the store received
    fresh = ddb_lean.sign("AKIDEXAMPLE", "secret", "tok", "eu-west-1", h1["host"], "/", h1["x-amz-target"],
                          store.raw[0], h1["x-amz-date"])
    assert h1["authorization"] == fresh["authorization"]


def test_a_cancelled_transaction_raises_the_clients_modeled_error_with_its_reasons(store: ScriptedStore) -> None:
    # given a store that cancels the transaction on a condition
    lean = lean_on(store.endpoint)
    store.script = [cancelled("None", "ConditionalCheckFailed")]
    # when it is written
    with pytest.raises(lean.client.exceptions.TransactionCanceledException) as caught:
        lean.transact_write_items(TransactItems=ITEMS)
    # then the error is botocore's, with the reasons where the adapters read them, and it was not retried
    assert caught.value.response["CancellationReasons"] == [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}]
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert caught.value.response["ResponseMetadata"]["RequestId"] == "req-1"
    assert len(store.seen) == 1


def test_a_failed_put_condition_is_the_clients_conditional_check_error(store: ScriptedStore) -> None:
    lean = lean_on(store.endpoint)
    store.script = [(400, {"__type": "com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException",
                           "message": "The conditional request failed"})]
    with pytest.raises(lean.client.exceptions.ConditionalCheckFailedException):
        lean.put_item(TableName="usage", Item={"id": {"S": "r1"}}, ConditionExpression="attribute_not_exists(id)")
    assert store.seen[0][0]["x-amz-target"] == "DynamoDB_20120810.PutItem"


def test_throttles_and_server_errors_are_tried_again_with_the_same_token(store: ScriptedStore,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # given three attempts, a store that throttles once and fails once before answering
    monkeypatch.setenv("ISTHMUS_STORE_MAX_ATTEMPTS", "3")
    sleeps: list[float] = []
    lean = lean_on(store.endpoint, sleeps=sleeps)
    store.script = [(400, {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException"}),
                    (500, {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError"}), (200, {})]
    # when a transaction is written
    lean.transact_write_items(TransactItems=ITEMS)
    # then it went three times, the same request each time (DynamoDB applies a token once), with backoffs
    # within botocore's standard mode (a throttle from 1 s, anything else from 25 ms, doubling)
    assert len(store.seen) == 3 and len({b["ClientRequestToken"] for _, b in store.seen}) == 1
    assert 0 <= sleeps[0] <= 1.0 and 0 <= sleeps[1] <= 0.05


def test_the_last_failed_attempt_is_raised_as_botocore_would(store: ScriptedStore,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_STORE_MAX_ATTEMPTS", "2")
    lean = lean_on(store.endpoint)
    store.script = [(503, {}), (503, {})]
    with pytest.raises(lean.client.exceptions.ClientError) as caught:
        lean.transact_write_items(TransactItems=ITEMS)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503 and len(store.seen) == 2


def test_a_kept_alive_connection_the_store_closed_is_replaced_without_losing_an_attempt(
        store: ScriptedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    # given one attempt only, and a store that closes each connection after its answer
    monkeypatch.setenv("ISTHMUS_STORE_MAX_ATTEMPTS", "1")
    lean = lean_on(store.endpoint)
    store.close_after_answer = True
    # when writes follow each other (the pooled connection is dead by the next one)
    for _ in range(3):
        lean.put_item(TableName="usage", Item={"id": {"S": "r"}})
    # then each went through once
    assert len(store.seen) == 3


def test_an_unreachable_store_is_botocores_connection_error_and_trips_the_breaker(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # given an endpoint nobody listens on, two attempts per call
    monkeypatch.setenv("ISTHMUS_STORE_MAX_ATTEMPTS", "2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    breaker = StoreBreaker(open_s=30)
    lean = lean_on(f"http://127.0.0.1:{port}", breaker=breaker)
    # when a transaction is written, then botocore's transport error comes back (the callers' 503)
    from botocore.exceptions import EndpointConnectionError
    with pytest.raises(EndpointConnectionError):
        lean.transact_write_items(TransactItems=ITEMS)
    # and the breaker counted both attempts: the next call is refused without trying
    with pytest.raises(StoreCircuitOpen):
        lean.transact_write_items(TransactItems=ITEMS)


def test_the_store_client_carries_a_lean_writer_unless_turned_off(monkeypatch: pytest.MonkeyPatch,
                                                                  store: ScriptedStore) -> None:
    monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", store.endpoint)
    dynamodb.reset_clients()
    try:
        assert isinstance(dynamodb.lean(dynamodb.client()), LeanDynamo)
        assert dynamodb.lean(dynamodb.client(fast_fail=True)) is None  # the probe's client stays botocore's
        monkeypatch.setenv("ISTHMUS_STORE_LEAN", "0")
        dynamodb.reset_clients()
        assert dynamodb.lean(dynamodb.client()) is None
        monkeypatch.delenv("ISTHMUS_STORE_LEAN")
        monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")  # only botocore honours a proxy
        dynamodb.reset_clients()
        assert dynamodb.lean(dynamodb.client()) is None
    finally:
        dynamodb.reset_clients()

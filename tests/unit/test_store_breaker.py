"""The store client's circuit breaker against a real TCP server on loopback that takes requests and never answers
(a frozen store): after two attempts fail in transport, calls are refused without being sent, then one at a time
goes through again once the open window has passed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from isthmus.adapters import dynamodb
from isthmus.errors import StoreCircuitOpen, store_failure


class FrozenStore:
    """Accepts connections and reads requests, never answers; counts the requests it was sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.requests += data.count(b"POST / HTTP/1.1")

    def close(self) -> None:
        self.sock.close()
        for conn in self._conns:
            conn.close()


@pytest.fixture
def frozen_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[FrozenStore]:
    store = FrozenStore()
    monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", f"http://127.0.0.1:{store.port}")
    monkeypatch.setenv("ISTHMUS_STORE_READ_TIMEOUT_SECONDS", "0.2")
    monkeypatch.setenv("ISTHMUS_STORE_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("ISTHMUS_STORE_BREAKER_SECONDS", "0.5")
    dynamodb.reset_clients()
    yield store
    store.close()
    dynamodb.reset_clients()


def get(client: object) -> BaseException:
    with pytest.raises(Exception) as caught:
        client.get_item(TableName="t", Key={"id": {"S": "x"}})  # type: ignore[attr-defined]
    return caught.value


def test_a_frozen_store_opens_the_breaker_then_one_call_at_a_time_is_let_through(frozen_store: FrozenStore) -> None:
    client = dynamodb.client()
    # given a call whose two attempts time out (sent, never answered)
    first = get(client)
    assert type(first).__name__ == "ReadTimeoutError" and frozen_store.requests == 2
    # when the next calls come while the breaker is open
    refused = [get(client) for _ in range(5)]
    # then none of them is sent, each is the store's 503 for the caller
    assert all(isinstance(e, StoreCircuitOpen) for e in refused)
    assert frozen_store.requests == 2
    failure = store_failure(refused[0])
    assert failure is not None and failure.status == 503 and failure.headers["Retry-After"]
    # and once the open window has passed, one attempt goes to the store again; it fails, so the breaker opens
    # again and refuses that call's retry
    time.sleep(0.6)
    again = get(client)
    assert isinstance(again, StoreCircuitOpen) and frozen_store.requests == 3
    assert isinstance(get(client), StoreCircuitOpen) and frozen_store.requests == 3


def test_the_readiness_probe_shares_the_breaker(frozen_store: FrozenStore) -> None:
    # given the breaker opened by the request path's client
    get(dynamodb.client())
    sent = frozen_store.requests
    # when readiness asks with its own fast-failing client
    problems = dynamodb.DynamoStoreProbe(("usage",)).problems()
    # then it says the store is unreachable without sending anything
    assert problems == ["DynamoDB unreachable: StoreCircuitOpen"] and frozen_store.requests == sent

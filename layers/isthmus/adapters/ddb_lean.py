"""The hot writes (settlement transactions, usage rows, reservations) as lean DynamoDB calls: the JSON protocol
signed with SigV4 over kept-alive ``http.client`` connections, beside the botocore client whose endpoint, region
and credential chain they use.

Why: botocore costs ~1 ms of CPU per call plus ~0.07 ms per row (its serializer walks every attribute of every row,
its endpoint rules run over the whole request): a 100-row settlement batch is ~7 ms of CPU in a thread that holds
the GIL beside the event loop's requests, which is where the edge's p99 came from. The low-level client's
parameters are DynamoDB's JSON body as it is, so the lean call is ``json.dumps`` and a signature.

What it keeps of botocore, so that nothing above it changes: errors are the client's own modeled exceptions
(``ddb.exceptions.TransactionCanceledException`` with ``CancellationReasons``), transport failures botocore's
(``EndpointConnectionError``, ``ReadTimeoutError``); the attempts, timeouts and backoff of its standard retry mode
(``isthmus.adapters.aws.call_limits``); TransactWriteItems' idempotency token (a retried transaction is applied
once); the store breaker and the call-duration metric see every attempt. Binary attributes (base64 on the wire)
are not used by these writes; ``ISTHMUS_STORE_LEAN=0`` sends everything through botocore (moto's in-memory mock,
which hooks botocore, needs that).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import random
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from isthmus import metrics
from isthmus.adapters import aws
from isthmus.adapters.store_breaker import StoreBreaker

# botocore's standard retry mode (botocore/retries/standard.py): throttles back off from 1 s, other transient
# errors from 25 ms for DynamoDB, jittered, doubling per attempt, at most 20 s
THROTTLES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled", "SlowDown",
    "PriorRequestNotComplete"})
TRANSIENT = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
MAX_BACKOFF_S = 20.0
SERVICE = "dynamodb"


def enabled() -> bool:
    """``ISTHMUS_STORE_LEAN`` (on unless "0"); off behind an HTTP proxy, which only botocore's session honours."""
    if os.environ.get("ISTHMUS_STORE_LEAN", "1") == "0":
        return False
    return not any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"))


class _Retry(Exception):
    """An attempt failed in a way botocore would try again (carries what to raise when no attempt is left)."""

    def __init__(self, error: BaseException, throttled: bool) -> None:
        self.error, self.throttled = error, throttled


class LeanDynamo:
    """Lean calls on ``client``'s endpoint with ``client``'s credentials; thread-safe (a pool of connections)."""

    def __init__(self, client: Any, breaker: StoreBreaker | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.breaker, self.sleep = client, breaker, sleep
        self.endpoint = client.meta.endpoint_url
        url = urlsplit(self.endpoint)
        self._https = url.scheme == "https"
        self._host, self._port = url.hostname or "", url.port or (443 if self._https else 80)
        self._host_header = url.netloc  # the port only when not the scheme's default, as botocore signs it
        self._path = url.path or "/"
        self.region = client.meta.region_name
        self._credentials = client._request_signer._credentials  # botocore's chain (refreshed by botocore)
        self.connect_s, self.read_s, self.attempts = aws.call_limits()
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._keys: tuple[str, str, bytes] | None = None  # (day, secret, signing key): one HMAC chain a day
        self._tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ the operations
    # The operations take the botocore client's keyword arguments, so a caller uses either (dynamodb.writer).
    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        # botocore fills the idempotency token itself: a transaction retried after a lost answer is applied once
        return self.call("TransactWriteItems", {"ClientRequestToken": str(uuid.uuid4()), **params})

    def put_item(self, **params: Any) -> dict[str, Any]:
        return self.call("PutItem", params)

    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode()
        started = time.perf_counter()
        try:
            for attempt in range(1, self.attempts + 1):
                try:
                    return self._attempt(operation, body)
                except _Retry as retry:
                    if attempt == self.attempts:
                        raise retry.error from None
                    scale = 1.0 if retry.throttled else 0.025
                    self.sleep(random.random() * min(scale * 2 ** (attempt - 1), MAX_BACKOFF_S))
            raise AssertionError("unreachable")  # pragma: no cover (attempts >= 1)
        finally:
            metrics.store_call_observed(operation, time.perf_counter() - started)

    # ------------------------------------------------------------------ one attempt
    def _attempt(self, operation: str, body: bytes) -> dict[str, Any]:
        if self.breaker is not None:
            self.breaker.before_attempt()
        headers = self._signed_headers(f"DynamoDB_20120810.{operation}", body)
        try:
            status, request_id, data = self._exchange(headers, body)
        except _Retry as retry:
            if self.breaker is not None:
                self.breaker.after_attempt(retry.error)
            raise
        if self.breaker is not None:
            self.breaker.after_attempt(None)  # an answer of any kind: the store is there
        if status == 200:
            return json.loads(data) if data else {}
        raise self._error(operation, status, request_id, data)

    def _error(self, operation: str, status: int, request_id: str, data: bytes) -> BaseException:
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {}
        code = str(parsed.get("__type", "")).rpartition("#")[2] or str(status)
        response: dict[str, Any] = {
            "Error": {"Code": code, "Message": parsed.get("message") or parsed.get("Message") or ""},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": request_id}}
        for extra in ("CancellationReasons", "Item"):  # botocore puts a modeled error's members beside "Error"
            if extra in parsed:
                response[extra] = parsed[extra]
        error = self.client.exceptions.from_code(code)(response, operation)
        if code in THROTTLES or status == 429:
            return _Retry(error, throttled=True)
        if code in TRANSIENT or status in TRANSIENT_STATUS:
            return _Retry(error, throttled=False)
        return error

    def _exchange(self, headers: dict[str, str], body: bytes) -> tuple[int, str, bytes]:
        """POST ``body``; (status, request id, answer). A kept-alive connection the store closed meanwhile is
        replaced at once (the store never read the request: the keep-alive race); any other transport failure is
        an attempt lost."""
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        conn, reused = self._connection()
        try:
            try:
                response, data = _post(conn, self._path, headers, body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                conn.close()
                if not reused:
                    raise
                conn = self._new_connection()
                response, data = _post(conn, self._path, headers, body)
        except TimeoutError as exc:
            conn.close()
            raise _Retry(ReadTimeoutError(endpoint_url=self.endpoint, error=exc), throttled=False) from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _Retry(EndpointConnectionError(endpoint_url=self.endpoint, error=exc), throttled=False) from None
        if response.will_close:
            conn.close()
        else:
            with self._lock:
                self._idle.append(conn)
        return response.status, response.getheader("x-amzn-RequestId") or "", data

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new_connection(), False

    def _new_connection(self) -> http.client.HTTPConnection:
        from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.connect_s,
                                               context=self._tls_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.connect_s)
        try:
            conn.connect()
        except TimeoutError as exc:
            raise _Retry(ConnectTimeoutError(endpoint_url=self.endpoint, error=exc), throttled=False) from None
        except OSError as exc:
            raise _Retry(EndpointConnectionError(endpoint_url=self.endpoint, error=exc), throttled=False) from None
        assert conn.sock is not None
        conn.sock.settimeout(self.read_s)  # connected within connect_s; now each read within read_s
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            from botocore.httpsession import where  # botocore's CA bundle (certifi's when installed)

            self._tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or where())
        return self._tls

    # ------------------------------------------------------------------ SigV4
    def _signed_headers(self, target: str, body: bytes) -> dict[str, str]:
        creds = self._credentials.get_frozen_credentials()
        amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        return sign(creds.access_key, creds.secret_key, creds.token, self.region, self._host_header, self._path,
                    target, body, amz_date, self._signing_key)

    def _signing_key(self, secret: str, day: str) -> bytes:
        keys = self._keys
        if keys is None or keys[0] != day or keys[1] != secret:
            self._keys = keys = (day, secret, signing_key(secret, day, self.region))
        return keys[2]


def sign(access_key: str, secret_key: str, token: str | None, region: str, host: str, path: str, target: str,
         body: bytes, amz_date: str, key_for: Callable[[str, str], bytes] | None = None) -> dict[str, str]:
    """The headers of a SigV4-signed DynamoDB JSON POST at ``amz_date`` (YYYYMMDDTHHMMSSZ); ``key_for(secret, day)``
    gives the signing key when cached (else it is derived here)."""
    headers = {"content-type": "application/x-amz-json-1.0", "host": host, "x-amz-date": amz_date,
               "x-amz-target": target}
    if token:
        headers["x-amz-security-token"] = token
    names = sorted(headers)
    signed = ";".join(names)
    canonical = "\n".join(["POST", path, "", *(f"{name}:{headers[name]}" for name in names), "", signed,
                           hashlib.sha256(body).hexdigest()])
    day = amz_date[:8]
    scope = f"{day}/{region}/{SERVICE}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(secret_key, day, region) if key_for is None else key_for(secret_key, day)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    return headers


def _post(conn: http.client.HTTPConnection, path: str, headers: dict[str, str],
          body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    conn.request("POST", path, body, headers)  # our signed Host header: http.client adds none of its own
    response = conn.getresponse()
    return response, response.read()


def signing_key(secret_key: str, day: str, region: str) -> bytes:
    """SigV4's key for one day, region and service: a chain of four HMACs."""
    key = _hmac(f"AWS4{secret_key}".encode(), day)
    for part in (region, SERVICE, "aws4_request"):
        key = _hmac(key, part)
    return key


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()

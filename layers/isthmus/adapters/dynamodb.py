"""DynamoDB access through the low-level botocore client (same code on AWS, DynamoDB Local, Alternator).

botocore is imported on first use, not at module import: it costs ~270 ms of a handler's cold import.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from isthmus import settings
from isthmus.adapters import aws
from isthmus.adapters.store_breaker import StoreBreaker
from isthmus.errors import StoreCircuitOpen

_lock = threading.Lock()
_clients: dict[tuple[str | None, str], Any] = {}
_breakers: dict[str | None, StoreBreaker] = {}


def client(*, fast_fail: bool = False) -> Any:
    """A cached DynamoDB client whose calls are bounded (:func:`isthmus.adapters.aws.call_limits`, read when the
    client is made). ``fast_fail`` gives a probe's client: 1 s connect and 2 s read timeouts (the configured
    ones when lower) and no retries."""
    endpoint = settings.dynamodb_endpoint()
    key = (endpoint, "fast" if fast_fail else "normal")
    cached = _clients.get(key)
    if cached is not None:
        return cached
    with _lock:
        if key not in _clients:
            quiet_request_logs()
            # cold start: botocore only on the first DynamoDB call
            from botocore.config import Config

            connect_s, read_s, attempts = aws.call_limits()
            # No client-side parameter validation: our adapters build every request, DynamoDB validates it
            # anyway, and the walk costs ~25 % of a call's CPU (settlement batches run beside live requests).
            config = Config(connect_timeout=min(1.0, connect_s), read_timeout=min(2.0, read_s),
                            retries={"total_max_attempts": 1, "mode": "standard"},
                            parameter_validation=False) if fast_fail else \
                Config(connect_timeout=connect_s, read_timeout=read_s,
                       retries={"total_max_attempts": attempts, "mode": "standard"}, max_pool_connections=64,
                       parameter_validation=False)
            kwargs: dict[str, Any] = {"region_name": settings.region(), "config": config}
            if endpoint:
                kwargs["endpoint_url"] = endpoint
                # DynamoDB Local accepts any credentials; never depend on the developer's profile.
                kwargs.setdefault("aws_access_key_id", "local")
                kwargs.setdefault("aws_secret_access_key", "local")
            breaker = _breakers.setdefault(endpoint, StoreBreaker())  # one per store, shared by its clients
            made = breaker.attach(aws.client("dynamodb", **kwargs))
            if not fast_fail:
                _attach_lean(made, breaker)
            _clients[key] = made
    return _clients[key]


def _attach_lean(ddb: Any, breaker: StoreBreaker) -> None:
    from isthmus.adapters import ddb_lean

    if ddb_lean.enabled() and ddb._request_signer._credentials is not None:  # none: botocore says so, on use
        ddb.isthmus_lean = ddb_lean.LeanDynamo(ddb, breaker if breaker.open_s > 0 else None)


def writer(ddb: Any) -> Any:
    """What sends ``ddb``'s hot writes (``transact_write_items``, ``put_item``, same arguments): its lean writer when
    it has one, else the client itself."""
    return lean(ddb) or ddb


def lean(ddb: Any) -> Any:
    """The lean writer of ``ddb`` (isthmus.adapters.ddb_lean.LeanDynamo: TransactWriteItems and PutItem without
    botocore's per-call CPU), or None: botocore for everything (``ISTHMUS_STORE_LEAN=0``, moto, a proxy)."""
    return getattr(ddb, "isthmus_lean", None)


# What a request's first store call would otherwise load: each operation's model is parsed on its first use.
_HOT_OPERATIONS = ("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "TransactWriteItems")


def prepare() -> None:
    """Make the store client now (a Lambda function's init): botocore's import, the DynamoDB service model, the
    credential chain and the hot operations' models, none of which touches the network."""
    service_model = client().meta.service_model
    for name in _HOT_OPERATIONS:
        service_model.operation_model(name)


def quiet_request_logs() -> None:
    """botocore at DEBUG logs whole request and response bodies, and ours carry the key pepper and key
    hashes: its loggers stay at INFO unless ISTHMUS_LOG_STORE_REQUESTS=1 (local debugging only)."""
    if os.environ.get("ISTHMUS_LOG_STORE_REQUESTS") != "1":
        for name in ("botocore", "boto3", "urllib3"):
            logging.getLogger(name).setLevel(logging.INFO)


def reset_clients() -> None:
    """Forget cached clients (tests that point ISTHMUS_DYNAMODB_ENDPOINT elsewhere, or start moto)."""
    with _lock:
        _clients.clear()
        _breakers.clear()
    aws.reset()


class DynamoStoreProbe:
    """StoreProbe over DynamoDB: every configured table must exist and be ACTIVE."""

    def __init__(self, tables: tuple[str, ...] = settings.TABLES) -> None:
        self.tables = tables

    def problems(self) -> list[str]:
        # cold start: botocore only when the store is checked
        from botocore.exceptions import BotoCoreError, ClientError

        ddb = client(fast_fail=True)
        found: list[str] = []
        for name in self.tables:
            physical = settings.table_name(name)
            try:
                status = ddb.describe_table(TableName=physical)["Table"]["TableStatus"]
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                found.append(f"table {physical}: {'missing' if code == 'ResourceNotFoundException' else code}")
                continue
            except (BotoCoreError, StoreCircuitOpen) as exc:
                # Unreachable store: one line says it all, no point asking about the other tables.
                return [f"DynamoDB unreachable: {type(exc).__name__}"]
            if status != "ACTIVE":
                found.append(f"table {physical}: {status}")
        return found

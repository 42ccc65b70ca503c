"""What a Lambda function's init makes so that its first invoke does not (``bench/cold_import.py`` measures both).

Init runs at full CPU before any request is routed to the sandbox (and is what SnapStart would snapshot); the
first invoke runs at the function's CPU share with a caller waiting. So in a sandbox (``AWS_LAMBDA_FUNCTION_NAME``
set) the init makes: the store client (botocore, the DynamoDB model, the credential chain, the hot operations'
models, the paginators' model, the modeled errors) with its first call made (:func:`first_call`), and anyio's
threadpool backend; the parts the function's requests use (``parts``: services and the
adapters they import, from :mod:`isthmus.wiring`); the schema of every pydantic model imported so far that was
deferred (``defer_build``: built on first validation otherwise); then it freezes what it made out of the garbage
collector's reach. Outside a sandbox (the edge, uvicorn, tests) nothing here runs: each part is built on first
use there, and importing a handler builds no schema and imports no client library. Nothing here touches the
network.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from isthmus import settings

if TYPE_CHECKING:
    from pydantic import BaseModel

# Our modules only: a third-party model deferred by its library stays as its library chose.
_OURS = ("isthmus", "routes", "admin_api", "functions.")
_FIRST_CALL = "isthmus-lambda-init-first-call"


def in_sandbox() -> bool:
    """A real Lambda sandbox (the local edge's lambda mode sets ISTHMUS_RUNTIME, not this: it is long-running)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def prepare(*parts: Callable[[], object], store: bool = True) -> None:
    """In a sandbox: the store client when ``store``, each of ``parts`` called, the deferred schemas built, and
    the heap frozen (see the module). A no-op elsewhere."""
    if not in_sandbox():
        return
    if store:
        prepare_store()
    for part in parts:
        part()
    build_deferred_schemas()
    # Init's objects (modules, clients, models, schemas) live as long as the sandbox: frozen, no collection
    # ever walks them again, so the first invoke's allocations do not set off a full collection over init's
    # whole heap (the queue and schedule functions' first invoke paid 50-90 ms of gen-2 collection so).
    gc.freeze()


def prepare_store() -> None:
    """The store client made, its first call on every table made (without a request, see :func:`first_call`) and
    what its first listing and first connection load, loaded. A Lambda init does this; so does the local edge
    before it freezes its heap (local_runtime.edge.server), or botocore's ~60,000 objects, made on the first
    request, stay in reach of every full collection (~30-40 ms each, a few every 10 s in open mode)."""
    # every store call runs in the threadpool: anyio's asyncio backend is otherwise imported by the first
    import anyio._backends._asyncio  # noqa: F401

    from isthmus.adapters import dynamodb

    dynamodb.prepare()
    ddb = dynamodb.client()
    first_call(ddb, [settings.table_name(table) for table in settings.TABLES])
    ddb.exceptions  # noqa: B018 (the modeled error classes: built on first use, ~10 ms here)
    # every listing pages through Query or Scan: botocore loads the paginators' model on the first
    # get_paginator, walking its whole data directory to check the service name (~25 ms here)
    for operation in ("query", "scan"):
        ddb.get_paginator(operation)
    ddb.meta.service_model.operation_model("Scan")
    # the first connection encodes the endpoint's host name with the idna codec (stringprep, unicodedata)
    import encodings.idna  # noqa: F401


def first_call(client: Any, tables: list[str]) -> None:
    """Make ``client``'s first call on each of ``tables`` and of each hot operation, which does once what later
    calls reuse (the endpoint rules' evaluation, cached per table name: ~2 ms each; the aliases of each
    operation's event names; the serializer's first walk of its shapes), without a request: the first
    ``before-call`` handler answers it, as botocore's Stubber does, so no request is signed or sent and neither
    the store breaker nor the call-duration metric sees it. A warm-up that fails leaves that work to the first
    request."""
    from botocore.awsrequest import AWSResponse

    def answer(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        return AWSResponse(None, 200, {}, None), {}

    events = client.meta.events
    events.register_first("before-call", answer, unique_id=_FIRST_CALL)
    key, value = {"pk": {"S": "init"}}, {":v": {"S": "init"}}
    try:
        for table in tables:
            client.get_item(TableName=table, Key=key)
        table = tables[0]
        client.put_item(TableName=table, Item=key, ConditionExpression="attribute_not_exists(pk)")
        client.update_item(TableName=table, Key=key, UpdateExpression="SET v = :v", ExpressionAttributeValues=value)
        client.delete_item(TableName=table, Key=key)
        client.query(TableName=table, KeyConditionExpression="pk = :v", ExpressionAttributeValues=value)
        client.scan(TableName=table)
        client.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": key}}])
    except Exception:  # an optimisation only: the first request does the same work if this fails
        pass
    finally:
        events.unregister("before-call", unique_id=_FIRST_CALL)


def build_deferred_schemas() -> int:
    """Build the schema of every model of ours imported so far whose build was deferred; returns how many (0 when
    pydantic was never imported: a function that validates nothing does not load it for this)."""
    if "pydantic" not in sys.modules:
        return 0
    from pydantic import BaseModel

    built = 0
    for model in _subclasses(BaseModel):
        if not model.__pydantic_complete__ and model.__module__.startswith(_OURS):
            # raise_errors=False: a generic or a model whose forward reference only resolves later stays
            # deferred (it is then built on first use, as before) instead of failing the init
            built += bool(model.model_rebuild(raise_errors=False))
    return built


def _subclasses(cls: type[BaseModel]) -> Iterator[type[BaseModel]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)

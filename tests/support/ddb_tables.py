"""The template's tables for tests: under a prefix of a run's own on a DynamoDB-compatible endpoint (the env a
process's clients read set for the span of a fixture and restored after). Never used outside tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from isthmus.adapters import dynamodb
from local_runtime.ddb import use_local_endpoint

TABLE_ENV = ("ISTHMUS_DYNAMODB_ENDPOINT", "ISTHMUS_TABLE_PREFIX")


@contextmanager
def tables_under_prefix(endpoint: str, prefix: str) -> Iterator[Any]:
    """This process's DynamoDB clients (and its children's) pointed at ``endpoint`` with every table name under
    ``prefix``; yields a client to make the tables with. Afterwards the env is as before and clients are reset."""
    saved = {k: os.environ.get(k) for k in TABLE_ENV}
    os.environ["ISTHMUS_TABLE_PREFIX"] = prefix
    use_local_endpoint(endpoint)
    try:
        yield dynamodb.client()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        dynamodb.reset_clients()


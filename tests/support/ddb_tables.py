"""The template's tables for tests: under a prefix of a run's own on a DynamoDB-compatible endpoint (the env a
process's clients read set for the span of a fixture and restored after), or in moto for fast unit tests. Never
used outside tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

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


@contextmanager
def moto_tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every template table in moto's in-memory DynamoDB, for fast unit tests (DynamoDB Local for anything about
    concurrency or persistence): no endpoint, fake credentials, the process's clients reset on both sides."""
    import boto3
    from moto import mock_aws

    from local_runtime.tables import create_tables

    monkeypatch.delenv("ISTHMUS_DYNAMODB_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "t")
    monkeypatch.setenv("ISTHMUS_STORE_LEAN", "0")  # moto hooks botocore: every call must go through it
    with mock_aws():
        dynamodb.reset_clients()
        create_tables(boto3.client("dynamodb", region_name="us-east-1"))
        yield
    dynamodb.reset_clients()

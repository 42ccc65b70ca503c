from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.dynamodb import DynamoStoreProbe
from isthmus.services.control import health
from local_runtime.tables import create_tables


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_DYNAMODB_ENDPOINT", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    dynamodb.reset_clients()


@mock_aws
def test_ready_when_every_table_exists() -> None:
    create_tables(boto3.client("dynamodb", region_name="us-east-1"))
    status, body = health.readiness(DynamoStoreProbe())
    assert status == 200
    assert body["status"] == "ready"


@mock_aws
def test_missing_table_is_named_in_a_503() -> None:
    client = boto3.client("dynamodb", region_name="us-east-1")
    create_tables(client)
    client.delete_table(TableName=settings.table_name("usage"))
    status, body = health.readiness(DynamoStoreProbe())
    assert status == 503
    assert f"{settings.table_name('usage')}: missing" in body["detail"]


def test_create_tables_is_idempotent() -> None:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        first = create_tables(client)
        assert len(first) == 15
        assert create_tables(client) == []
        ttl = client.describe_time_to_live(TableName=settings.table_name("sessions"))["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "expires_at_epoch"

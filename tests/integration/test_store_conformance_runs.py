"""``make conformance`` (the store-contract suite pointed at an endpoint) passes against DynamoDB Local and stops
with a message naming the missing capability against an engine without transactions (a loopback proxy in front
of DynamoDB Local that refuses TransactWriteItems)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from local_runtime.ddb import DynamoLocal
from tests.conftest import ROOT
from tests.support.refusing_proxy import RefusingProxy

pytestmark = pytest.mark.integration


def conformance(endpoint: str) -> subprocess.CompletedProcess[str]:
    """What ``ISTHMUS_DYNAMODB_ENDPOINT=... make conformance`` runs."""
    env = {**os.environ, "ISTHMUS_CONFORMANCE_ENDPOINT": endpoint}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/conformance"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def tables_of(ddb_local: DynamoLocal) -> set[str]:
    import boto3

    client = boto3.client("dynamodb", endpoint_url=ddb_local.endpoint, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local")
    return set(client.list_tables()["TableNames"])


def test_conformance_passes_against_dynamodb_local_and_leaves_no_table(ddb_local: DynamoLocal) -> None:
    before = tables_of(ddb_local)
    run = conformance(ddb_local.endpoint)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "passed" in run.stdout
    assert tables_of(ddb_local) == before


def test_conformance_names_the_missing_transactions(ddb_local: DynamoLocal) -> None:
    # given an engine that answers everything but TransactWriteItems
    before = tables_of(ddb_local)
    with RefusingProxy(ddb_local.endpoint, {"TransactWriteItems"}) as proxy:
        # when the conformance suite is pointed at it
        run = conformance(proxy.endpoint)
    # then it fails before any contract test, naming the capability and what needs it
    output = run.stdout + run.stderr
    assert run.returncode == 3, output[-3000:]
    assert proxy.refusals >= 1
    assert "lacks what Isthmus's guarantees need" in output
    assert "TransactWriteItems (all or nothing, ConditionCheck): refused by the store" in output
    assert "settlements" in output
    assert "ConditionExpression on UpdateItem" not in output  # what it has is not reported missing
    assert tables_of(ddb_local) == before  # its scratch table is removed too

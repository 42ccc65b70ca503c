"""Readiness and persistence against a real DynamoDB Local (not moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.dynamodb import DynamoStoreProbe
from isthmus.services.control import health
from local_runtime.ddb import DynamoLocal, free_port, use_local_endpoint
from local_runtime.tables import create_tables
from tests.support.waiting import poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def module_ddb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoLocal]:
    """A DynamoDB Local of this module's own (its tests stop and restart it), persistent in a folder of its own:
    one JVM start and one set of tables for the module."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ISTHMUS_TABLE_PREFIX", "restart-")
        # use_local_endpoint() writes os.environ: let the patch put the session's endpoint back afterwards
        env.setenv("ISTHMUS_DYNAMODB_ENDPOINT", "set-below")
        ddb = DynamoLocal(free_port(), tmp_path_factory.mktemp("dynamodb")).start()
        use_local_endpoint(ddb.endpoint)
        create_tables(dynamodb.client())
        try:
            yield ddb
        finally:
            ddb.stop()
            dynamodb.reset_clients()


@pytest.fixture()
def own_ddb(module_ddb: DynamoLocal) -> DynamoLocal:
    """The module's store, running when each test starts (a test before may have left it stopped)."""
    if module_ddb.proc is None or module_ddb.proc.poll() is not None:
        module_ddb.start()
    return module_ddb


def test_readiness_goes_503_when_dynamodb_stops_and_200_when_it_returns(own_ddb: DynamoLocal) -> None:
    probe = DynamoStoreProbe()
    # given a running store with every table
    assert health.readiness(probe)[0] == 200
    # when DynamoDB Local stops
    own_ddb.stop()
    status, body = health.readiness(probe)
    # then readiness is 503 with a body that says why
    assert status == 503
    assert "DynamoDB unreachable" in body["detail"]
    # when it comes back on the same port and data folder
    own_ddb.start()
    # then readiness is 200 again, with no table re-created (soon, not at once: a just-started DynamoDB Local on a
    # busy machine can outlast the probe's fast-fail timeouts, and the store's circuit breaker may be cooling down)
    poll(lambda: health.readiness(probe)[0] == 200, timeout=30)


def test_data_survives_a_restart_in_the_data_folder(own_ddb: DynamoLocal) -> None:
    # given an item written to the persistent store
    table = settings.table_name("settings")
    dynamodb.client().put_item(TableName=table, Item={"name": {"S": "probe"}, "value": {"S": "kept"}})
    # when DynamoDB Local restarts
    own_ddb.stop()
    own_ddb.start()
    # then the tables and the item are still there
    assert create_tables(dynamodb.client()) == []
    item = dynamodb.client().get_item(TableName=table, Key={"name": {"S": "probe"}}, ConsistentRead=True)["Item"]
    assert item["value"]["S"] == "kept"

"""The store-contract suite's one fixture: a DynamoDB-compatible endpoint with the template's tables under a
prefix of this run's own, removed afterwards.

The endpoint is ``ISTHMUS_CONFORMANCE_ENDPOINT`` (``make conformance`` passes ``ISTHMUS_DYNAMODB_ENDPOINT`` as it),
else the test session's DynamoDB Local. Before any table is made, each capability the guarantees need is probed
(tests/conformance/capabilities.py); a store that lacks one stops the run with a message naming it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from isthmus import settings
from local_runtime.tables import create_tables, table_requests
from local_runtime.template import load_template
from tests.conformance.capabilities import missing, scratch_table
from tests.support.ddb_tables import tables_under_prefix


@pytest.fixture(scope="package", autouse=True)
def conformance_store(request: pytest.FixtureRequest) -> Iterator[str]:
    endpoint = os.environ.get("ISTHMUS_CONFORMANCE_ENDPOINT") or request.getfixturevalue("ddb_local").endpoint
    prefix = f"conf{uuid.uuid4().hex[:8]}-"
    with tables_under_prefix(endpoint, prefix) as ddb:
        made: list[str] = []
        try:
            scratch = f"{prefix}capabilities"
            scratch_table(ddb, scratch)
            made.append(scratch)
            lacking = missing(ddb, scratch)
            if lacking:
                pytest.exit(f"the store at {endpoint} lacks what Isthmus's guarantees need:\n  - "
                            + "\n  - ".join(lacking), returncode=3)
            made += create_tables(ddb)
            yield endpoint
        finally:
            for name in made:
                ddb.delete_table(TableName=name)


def ttl_attributes() -> dict[str, str]:
    """Logical table -> its TTL attribute, from the template."""
    out = {}
    for kwargs, attr in table_requests(load_template()):
        if attr:
            out[kwargs["TableName"].removeprefix(settings.table_prefix())] = attr
    return out

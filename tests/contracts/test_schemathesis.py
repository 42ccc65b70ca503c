"""schemathesis against the local edge (DynamoDB Local under tables of its own, the deterministic fake agent): every
operation of /openapi.json, under both prefixes, with generated requests; each answer must not be a 5xx, must match
its documented schema and carry a documented status. At least ``MIN_CASES`` cases in all."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from local_runtime.ddb import DynamoLocal
from local_runtime.process import stop
from local_runtime.tables import create_tables
from tests.conftest import start_edge
from tests.support.control_agents import AgentSpec, RunningAgent, fake_agent_command, start_agent
from tests.support.ddb_tables import tables_under_prefix

pytestmark = pytest.mark.e2e
EXAMPLES_PER_OPERATION = int(os.environ.get("ISTHMUS_FUZZ_EXAMPLES", "25"))
MIN_CASES = 2000


# no 5xx at all: every group has landed (the honest 501 of a group still to come was allowed while one had not)
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]


@pytest.fixture(scope="module")
def fuzz_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    spec = AgentSpec(node_id="fuzz", models_dir=tmp_path_factory.mktemp("fuzz-agent"), model="fake-model")
    running = start_agent(spec, fake_agent_command)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def fuzz_edge(ddb_local: DynamoLocal, fuzz_agent: RunningAgent, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[str]:
    """An open-mode edge (management open to loopback, admin without a token) on tables of its own: what the
    fuzzer writes never meets another test's rows."""
    prefix = f"fz{uuid.uuid4().hex[:6]}-"
    with tables_under_prefix(ddb_local.endpoint, prefix) as client:
        create_tables(client)
        data = tmp_path_factory.mktemp("fuzz-edge")
        env = {"ISTHMUS_TABLE_PREFIX": prefix, "ISTHMUS_DEFAULT_AGENT_URL": fuzz_agent.base_url,
               "ISTHMUS_MASTER_KEY": "", "ISTHMUS_ADMIN_TOKEN": "", "ISTHMUS_SPOOL_DIR": str(data / "spool"),
               "ISTHMUS_LOCAL_KEY_FILE": str(Path(data) / "provider.key")}
        proc, base = start_edge("asgi", env=env)
        try:
            yield base
        finally:
            stop(proc)


@pytest.fixture(scope="module")
def api_schema(fuzz_edge: str) -> Any:
    import httpx

    raw = httpx.get(f"{fuzz_edge}/openapi.json", timeout=30).json()
    loaded = schemathesis.openapi.from_dict(raw)
    loaded.config.update(base_url=fuzz_edge)
    return loaded


def fuzz(operation: Any, calls: list[str], statuses: dict[str, list[int]]) -> None:
    """Up to EXAMPLES_PER_OPERATION generated requests to one operation, each answer checked."""

    @hypothesis.given(case=operation.as_strategy())
    @hypothesis.settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                         suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])
    def run(case: schemathesis.Case) -> None:
        calls.append(operation.label)
        response = case.call_and_validate(checks=CHECKS, timeout=30)
        statuses.setdefault(operation.label, []).append(response.status_code)

    run()


def test_every_operation_answers_as_documented(api_schema: Any) -> None:
    # schemathesis's own pytest loader (from_fixture) does not run under pytest 9: the operations are driven here
    calls: list[str] = []
    statuses: dict[str, list[int]] = {}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        try:
            fuzz(operation, calls, statuses)
        except (Exception, BaseExceptionGroup) as exc:  # every operation is run; all failures reported together
            failures[operation.label] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    succeeded = {label for label, codes in statuses.items() if any(code < 400 for code in codes)}
    print(f"schemathesis: {len(calls)} cases over {len(operations)} operations, {len(succeeded)} answered a success")
    # and the schemas of answers shaped by hand were held to real successes, not only to error answers
    assert {"POST /v1/files", "GET /api/v1/files", "POST /admin/pools/reap", "GET /dashboard/", "GET /dashboard",
            "GET /admin/clusters/{cluster_id}/loads"} <= succeeded, sorted(succeeded)
    # then every operation was exercised, and the run is big enough to mean something
    assert {op.label for op in operations} <= set(calls)
    assert len(calls) >= MIN_CASES, len(calls)



LINK_EXAMPLES = int(os.environ.get("ISTHMUS_FUZZ_LINK_EXAMPLES", "8"))


def link_value(expression: str, case: schemathesis.Case, body: Any) -> Any:
    """An OpenAPI runtime expression of the two kinds the document uses."""
    if expression.startswith("$response.body#/"):
        return body.get(expression.removeprefix("$response.body#/")) if isinstance(body, dict) else None
    return (case.path_parameters or {}).get(expression.removeprefix("$request.path."))


def test_operations_an_answer_links_to_answer_as_documented_with_real_ids(api_schema: Any) -> None:
    """Each operation whose answer has links (a file's id to its content, a key's to its rotation, a cluster's to its
    load jobs, ...): generated calls, and after each success the operations it links to, called with the ids it
    answered (a random id reaches only their 404) and checked alike."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    by_id = {op.definition.raw["operationId"]: op for op in operations}
    answered: dict[str, list[int]] = {}
    followed: dict[str, list[int]] = {}  # the operations called through a link, with an id an answer gave
    failures: dict[str, str] = {}

    def follow(source: Any, links: dict[str, dict[str, dict[str, Any]]]) -> None:
        targets = sorted({link["operationId"] for found in links.values() for link in found.values()})

        @hypothesis.given(case=source.as_strategy(), data=hypothesis.strategies.data())
        @hypothesis.settings(max_examples=LINK_EXAMPLES, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck), phases=[hypothesis.Phase.generate])
        def run(case: schemathesis.Case, data: Any) -> None:
            # every target's case is drawn whatever the answer, so each example draws alike (hypothesis checks)
            drawn = {target: data.draw(by_id[target].as_strategy()) for target in targets}
            response = case.call_and_validate(checks=CHECKS, timeout=30)
            answered.setdefault(source.label, []).append(response.status_code)
            for link in links.get(str(response.status_code), {}).values():
                follow_up = drawn[link["operationId"]]
                body = response.json() if "json" in response.headers.get("content-type", [""])[0] else None
                follow_up.path_parameters = {**(follow_up.path_parameters or {}), **{
                    name: link_value(expression, case, body) for name, expression in link["parameters"].items()}}
                answer = follow_up.call_and_validate(checks=CHECKS, timeout=30)
                answered.setdefault(follow_up.operation.label, []).append(answer.status_code)
                followed.setdefault(follow_up.operation.label, []).append(answer.status_code)

        run()

    for source in operations:
        links = {status: answer["links"] for status, answer in source.definition.raw["responses"].items()
                 if isinstance(answer, dict) and "links" in answer}
        if links:
            try:
                follow(source, links)
            except (Exception, BaseExceptionGroup) as exc:
                failures[source.label] = str(exc)[:1500]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    succeeded = {label for label, codes in answered.items() if any(code < 400 for code in codes)}
    print(f"schemathesis links: {sum(map(len, answered.values()))} calls, {len(succeeded)} answered a success")
    # then the creations of every group with by-id operations succeeded, each of their links was followed, and
    # each operation reached through one answered a success with the id it was given; but a finished batch's
    # results (409 until the batch has run, which a fuzzed one has not yet) and a load (409: no node here can load;
    # tests/contracts/test_admin_answers.py loads a real one)
    assert {"POST /v1/files", "POST /api/v1/keys", "POST /v1/users", "POST /api/v1/budgets", "POST /v1/batches",
            "PUT /admin/clusters/{cluster_id}"} <= succeeded, sorted(succeeded)
    refused = {label for label, codes in followed.items() if all(code >= 400 for code in codes)}
    assert {label for label in refused if not label.endswith(("/results", "/load"))} == set(), \
        {label: followed[label] for label in refused}
    assert len(followed) >= 30, sorted(followed)

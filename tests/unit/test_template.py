"""template.yaml is the one source of truth: these tests pin what every later issue relies on."""

from __future__ import annotations

from pathlib import Path

from local_runtime.template import functions_with_routes, load_template, table_logical_ids

GROUPS = {"health", "inference", "models", "keys", "users", "budgets", "pricing", "usage", "files", "batches", "admin",
          "dashboard", "docs"}
TABLES = {"keys", "users", "budgets", "pricing", "usage", "clusters", "nodes", "settings", "providers", "files",
          "batches", "sessions", "responses", "ratelimits", "holds"}


def test_one_function_per_endpoint_group_each_with_a_handler_module() -> None:
    specs = functions_with_routes(load_template())
    assert {s.code_uri.strip("/").split("/")[-1] for s in specs} == GROUPS
    for spec in specs:
        assert spec.module == f"functions.{spec.code_uri.strip('/').split('/')[-1]}.app"
        assert spec.handler_attr == "handler"


def test_every_v1_route_is_also_served_under_api_v1() -> None:
    for spec in functions_with_routes(load_template()):
        paths = {(r.method, r.path) for r in spec.routes}
        for method, path in paths:
            if path.startswith("/v1/"):
                assert (method, "/api" + path) in paths, f"{spec.logical_id}: {method} /api{path} missing"


def test_tables_are_on_demand_and_named_to_the_functions() -> None:
    template = load_template()
    assert set(table_logical_ids(template).values()) == TABLES
    for lid in table_logical_ids(template):
        assert template["Resources"][lid]["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    for name in TABLES:
        assert f"ISTHMUS_TABLE_{name.upper()}" in env


def test_the_layers_are_python_layers_built_by_their_makefiles() -> None:
    # the makefiles ship precompiled bytecode (Lambda's /opt is read-only: nothing compiled there is kept)
    root = Path(__file__).resolve().parents[2]
    for lid, folder in (("IsthmusLayer", "layers"), ("ContractsLayer", "shared")):
        res = load_template()["Resources"][lid]
        assert res["Type"] == "AWS::Serverless::LayerVersion"
        assert res["Properties"]["ContentUri"] == f"{folder}/"
        assert res["Properties"]["CompatibleRuntimes"] == ["python3.11"]
        assert res["Metadata"]["BuildMethod"] == "makefile"
        makefile = (root / folder / "Makefile").read_text()
        assert f"build-{lid}:" in makefile and "compileall" in makefile


def test_environment_resolves_locally() -> None:
    # given the template's env with !Ref to tables and parameters
    health = next(s for s in functions_with_routes(load_template()) if s.logical_id == "HealthFunction")
    # then tables resolve to their local names and parameters to their defaults
    assert health.environment["ISTHMUS_TABLE_KEYS"].endswith("keys")
    assert health.environment["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert health.environment["ISTHMUS_ADMIN_TOKEN"] == ""


def test_every_function_is_built_by_functions_makefile() -> None:
    # functions/Makefile copies the folder and precompiles it, as the layers' makefiles do
    resources = load_template()["Resources"]
    functions = [r for r in resources.values() if r["Type"] == "AWS::Serverless::Function"]
    # + the streaming inference function, the holds sweeper, the settlement replay, the files sweeper and the
    # batch worker
    assert len(functions) == len(GROUPS) + 5
    for res in functions:
        assert res["Metadata"] == {"BuildMethod": "makefile", "ContextPath": "functions"}
    makefile = (Path(__file__).resolve().parents[2] / "functions" / "Makefile").read_text()
    assert "build-%Function:" in makefile and "compileall" in makefile

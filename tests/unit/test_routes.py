from __future__ import annotations

from local_runtime.edge.routes import RouteTable


def make_table() -> RouteTable[str]:
    table: RouteTable[str] = RouteTable()
    for method, path in [("ANY", "/{proxy+}"), ("ANY", "/v1/keys/{proxy+}"), ("ANY", "/v1/keys"),
                         ("GET", "/v1/models/{proxy+}"), ("GET", "/v1/models"),
                         ("GET", "/v1/responses/{response_id}"), ("POST", "/v1/responses"),
                         ("POST", "/v1/messages/count_tokens"), ("POST", "/v1/messages")]:
        table.add(method, path, f"{method} {path}")
    return table


def test_exact_routes_win_over_variables_and_greedy() -> None:
    table = make_table()
    assert table.match("POST", "/v1/messages/count_tokens")[0].target == "POST /v1/messages/count_tokens"  # type: ignore[index]
    assert table.match("GET", "/v1/models")[0].target == "GET /v1/models"  # type: ignore[index]


def test_path_variables_are_extracted() -> None:
    route, params = make_table().match("GET", "/v1/responses/resp_1")  # type: ignore[misc]
    assert route.target == "GET /v1/responses/{response_id}"
    assert params == {"response_id": "resp_1"}


def test_greedy_routes_take_the_rest_of_the_path_and_the_longest_prefix_wins() -> None:
    route, params = make_table().match("GET", "/v1/models/mlx-community/Qwen3-0.6B")  # type: ignore[misc]
    assert route.target == "GET /v1/models/{proxy+}"
    assert params == {"proxy": "mlx-community/Qwen3-0.6B"}


def test_method_mismatch_falls_through_to_the_catch_all() -> None:
    route, _ = make_table().match("DELETE", "/v1/messages")  # type: ignore[misc]
    assert route.target == "ANY /{proxy+}"


def test_no_catch_all_no_match() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("GET", "/health", "h")
    assert table.match("GET", "/nope") is None

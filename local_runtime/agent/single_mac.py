"""Single-Mac mode (`isthmus agent --serve-api`): one process serves the public /v1/* surface (the same
inference app as the gateway) with this agent as its only backend, next to /agent/v1/*. No control surface,
no DynamoDB: no keys, budgets or usage rows, stored responses kept in memory. This is what a `telemak`
cluster points at."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from isthmus import wiring
from isthmus.web import create_app, json_response, versioned
from local_runtime.agent.server import AgentState


def models_app(state: AgentState) -> ASGIApp:
    """/v1/models with the one loaded model (and `default`, its alias), in the gateway's shape."""

    def entry(model_id: str, root: str) -> dict[str, object]:
        chat = state.engine.loaded is None or state.engine.loaded.embedding is None  # else /v1/embeddings only
        return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": "isthmus",
                "root": root, "x_odyssai": {"ready": True, "loaded": True, "backend": "mlx", "kind": "mlx",
                                            "alias_for": root if model_id != root else None,
                                            "nodes": [state.node_id], "supports_streaming": chat,
                                            "supports_tools": chat, "supports_embeddings": not chat}}

    def entries() -> list[dict[str, object]]:
        loaded = state.engine.loaded
        return [entry("default", loaded.name), entry(loaded.name, loaded.name)] if loaded else []

    async def list_models(request: Request) -> Response:
        return json_response({"object": "list", "data": entries()})

    async def get_model(request: Request) -> Response:
        from isthmus.errors import ApiError

        found = [e for e in entries() if e["id"] == request.path_params["model_id"]]
        if not found:
            raise ApiError(404, f"Model '{request.path_params['model_id']}' not found", code="model_not_found")
        return json_response(found[0])

    return create_app([*versioned("/models", list_models, ["GET"]),
                       *versioned("/models/{model_id:path}", get_model, ["GET"])], service="models")


def serve_api_app(agent: ASGIApp, state: AgentState, self_url: str, *, api_key: str | None = None) -> ASGIApp:
    """``api_key``: the agent's own (``--api-key``), which the /v1/* surface sends on its calls to the agent."""
    from functions.inference import routes as inference

    # The composition root serves this agent only, no tenancy, memory responses.
    wiring.use_single_mac(self_url, api_key)
    models = models_app(state)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/agent/") or path == "/health":
            await agent(scope, receive, send)
        elif path.startswith(("/v1/models", "/api/v1/models")):
            await models(scope, receive, send)
        else:
            await inference.app(scope, receive, send)

    return dispatch

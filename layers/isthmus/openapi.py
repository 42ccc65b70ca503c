"""The OpenAPI 3.1 document of the whole API, built from the pydantic models the handlers parse with.

``OPERATIONS`` lists every operation once (path without its ``/v1`` / ``/api/v1`` prefix when it has both); the
document gives each its request model's JSON schema, its success answer, every error status it can answer in its
dialect's error shape (OpenAI's on ``/v1`` inference routes, Anthropic's on ``/v1/messages*``, ``{"detail"}`` on
the control surface), and who may call it (the auth schemes). ``tests/contracts/test_openapi.py`` holds it to
template.yaml and to each function's Starlette routes, so a route cannot be added without its operation.

Built once per process, on the first ``/openapi.json`` (it imports every request model: only the docs function
and the edge pay for that)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

# ---- who may call: OpenAPI security requirements (an empty one: open mode / loopback) ---------------------------
Security = list[dict[str, list[str]]]
KEY: Security = [{"Bearer": []}, {"OtariKey": []}, {"XApiKey": []}, {}]
MASTER: Security = [{"Bearer": []}, {"OtariKey": []}, {"XApiKey": []}, {}]
ADMIN: Security = [{"AdminToken": []}, {}]
ENROLL: Security = [{"EnrollToken": []}, {}]
NONE: Security = [{}]

SECURITY_SCHEMES = {
    "Bearer": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer <key>`: a virtual key (`gw-…`) or, for management, the master "
                              "key. Also accepted: `AnyLLM-Key` / `X-AnyLLM-Key`. Without a master key configured "
                              "(open mode) /v1 needs none and management is open to loopback callers."},
    "OtariKey": {"type": "apiKey", "in": "header", "name": "Otari-Key",
                 "description": "The key raw or as `Bearer <key>` (otari clients)."},
    "XApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The key (Anthropic SDKs)."},
    "AdminToken": {"type": "http", "scheme": "bearer",
                   "description": "`/admin/*`: `Authorization: Bearer <ODYSSAI_X_ADMIN_TOKEN>` when that is set "
                                  "(else open); 401 with `WWW-Authenticate: Bearer` otherwise."},
    "EnrollToken": {"type": "http", "scheme": "bearer",
                    "description": "Node enrollment and heartbeats: the enrollment token when one is set."},
}

# ---- answers ------------------------------------------------------------------------------------------------
ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "OpenAIError": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}},
    "AnthropicError": {"type": "object", "required": ["type", "error"], "properties": {
        "type": {"const": "error"},
        "error": {"type": "object", "required": ["type", "message"],
                  "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}}},
    "ControlError": {"type": "object", "required": ["detail"], "properties": {"detail": {}}},
}
_ERROR_TEXT = {400: "Bad request (a field named)", 401: "No valid credential", 402: "No price for the model",
               403: "Not allowed (budget, model, blocked user)", 404: "Not found", 405: "Method not allowed",
               409: "Conflict", 413: "Body too large", 414: "Path too long", 422: "Invalid field (control surface)",
               429: "Rate limited (Retry-After)", 431: "Headers too large", 499: "Client closed the request",
               500: "Internal error (names the request id)", 501: "Not implemented yet",
               502: "Upstream failed", 503: "Store or backend unavailable (Retry-After)", 504: "Upstream timed out"}
COMMON_ERRORS = (400, 401, 403, 404, 405, 409, 413, 414, 422, 429, 431, 500, 501, 502, 503, 504)
INFERENCE_ERRORS = (*COMMON_ERRORS, 402)

OBJECT: dict[str, Any] = {"type": "object"}
ARRAY: dict[str, Any] = {"type": "array", "items": {"type": "object"}}


def _obj(*required: str) -> dict[str, Any]:
    return {"type": "object", "required": list(required)}


KEY_VIEW = _obj("id", "created_at", "is_active", "exclude_from_budget", "metadata")
USER_VIEW = _obj("user_id", "blocked", "spend", "reserved", "created_at", "updated_at", "metadata")
BUDGET_VIEW = _obj("budget_id", "created_at", "updated_at")
PRICING_VIEW = _obj("model_key", "input_price_per_million", "output_price_per_million", "effective_at",
                    "created_at", "updated_at", "pricing_tiers")
USAGE_ROW = _obj("id", "model", "endpoint", "status", "timestamp", "source", "counts_toward_budget")
MODEL_LIST = {"type": "object", "required": ["object", "data"],
              "properties": {"object": {"const": "list"}, "data": ARRAY}}
CHAT_COMPLETION = _obj("id", "object", "created", "model", "choices")
MESSAGE = _obj("id", "type", "role", "content", "model")
RESPONSE = _obj("id", "object", "status", "output")


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # with "{name}" parameters; "/v1/..."-style paths are listed without the prefix, see ``versioned``
    group: str
    summary: str
    security: list[dict[str, list[str]]]
    body: str | None = None  # "module:Model" of the request body, imported when the document is built
    ok: int = 200
    answer: dict[str, Any] | None = field(default_factory=lambda: OBJECT)
    streams: bool = False  # 200 may be text/event-stream (``"stream": true``)
    versioned: bool = True  # served under /v1 and /api/v1
    query: tuple[str, ...] = ()
    content: str = "application/json"  # of the success answer
    not_implemented: bool = False  # an honest 501 until its group lands (``x-isthmus-not-implemented``)

    @property
    def paths(self) -> list[str]:
        return [f"{p}{self.path}" for p in ("/v1", "/api/v1")] if self.versioned else [self.path]


_D = "isthmus.dialects."
_T = "isthmus.services.tenancy."
_C = "isthmus.services.control."
PAGE = ("skip", "limit")
OPERATIONS: list[Op] = [
    # inference (dialect errors)
    Op("POST", "/chat/completions", "inference", "Chat completion (OpenAI)", KEY,
       f"{_D}openai_chat_models:ChatCompletionRequest", answer=CHAT_COMPLETION, streams=True),
    Op("POST", "/messages", "inference", "Message (Anthropic)", KEY, f"{_D}anthropic_models:MessagesRequest",
       answer=MESSAGE, streams=True),
    Op("POST", "/messages/count_tokens", "inference", "Count a message's input tokens (Anthropic)", KEY,
       f"{_D}anthropic_models:CountTokensRequest", answer=_obj("input_tokens")),
    Op("POST", "/responses", "inference", "Create a response (OpenAI Responses)", KEY,
       f"{_D}openai_responses_models:ResponsesRequest", answer=RESPONSE, streams=True),
    Op("GET", "/responses/{response_id}", "inference", "A stored response", KEY, answer=RESPONSE),
    Op("DELETE", "/responses/{response_id}", "inference", "Delete a stored response", KEY,
       answer=_obj("id", "deleted")),
    *(Op("POST", path, "inference", f"{what} (forwarded to an OpenAI-protocol cloud alias)", KEY, answer=None,
         content="*/*", body="")
      for path, what in (("/embeddings", "Embeddings"), ("/moderations", "Moderations"),
                         ("/images/generations", "Image generation"), ("/audio/speech", "Speech"))),
    Op("GET", "/models", "models", "Servable models (with x_odyssai)", KEY, answer=MODEL_LIST,
       query=("include_unloaded",)),
    Op("GET", "/models/{model_id}", "models", "One model (the id may contain '/')", KEY, answer=_obj("id")),
    # management (master key)
    Op("POST", "/keys", "keys", "Create a virtual key (its secret is shown once)", MASTER, f"{_T}keys:CreateKey",
       answer=_obj("id", "key", "created_at", "is_active")),
    Op("GET", "/keys", "keys", "List keys", MASTER, answer=_list_of(KEY_VIEW), query=PAGE),
    Op("GET", "/keys/{key_id}", "keys", "One key", MASTER, answer=KEY_VIEW),
    Op("PATCH", "/keys/{key_id}", "keys", "Update a key", MASTER, f"{_T}keys:UpdateKey", answer=KEY_VIEW),
    Op("DELETE", "/keys/{key_id}", "keys", "Delete a key", MASTER, ok=204, answer=None),
    Op("POST", "/keys/{key_id}/rotate", "keys", "Rotate a key", MASTER, answer=_obj("id", "key")),
    Op("POST", "/users", "users", "Create a user", MASTER, f"{_T}users:CreateUser", answer=USER_VIEW),
    Op("GET", "/users", "users", "List users", MASTER, answer=_list_of(USER_VIEW), query=PAGE),
    Op("GET", "/users/{user_id}", "users", "One user", MASTER, answer=USER_VIEW),
    Op("PATCH", "/users/{user_id}", "users", "Update a user", MASTER, f"{_T}users:UpdateUser", answer=USER_VIEW),
    Op("DELETE", "/users/{user_id}", "users", "Delete a user", MASTER, ok=204, answer=None),
    Op("GET", "/users/{user_id}/usage", "users", "A user's usage rows", MASTER, answer=_list_of(USAGE_ROW),
       query=(*PAGE, "start_date", "end_date")),
    Op("POST", "/budgets", "budgets", "Create a budget", MASTER, f"{_T}budgets:CreateBudget", answer=BUDGET_VIEW),
    Op("GET", "/budgets", "budgets", "List budgets", MASTER, answer=_list_of(BUDGET_VIEW), query=PAGE),
    Op("GET", "/budgets/{budget_id}", "budgets", "One budget", MASTER, answer=BUDGET_VIEW),
    Op("PATCH", "/budgets/{budget_id}", "budgets", "Update a budget", MASTER, f"{_T}budgets:UpdateBudget",
       answer=BUDGET_VIEW),
    Op("DELETE", "/budgets/{budget_id}", "budgets", "Delete a budget", MASTER, ok=204, answer=None),
    Op("GET", "/budgets/{budget_id}/reset-logs", "budgets", "A budget's resets", MASTER, answer=ARRAY, query=PAGE),
    Op("POST", "/pricing", "pricing", "Set a model's price", MASTER, f"{_T}pricing:SetPricing", answer=PRICING_VIEW),
    Op("GET", "/pricing", "pricing", "List prices", KEY, answer=_list_of(PRICING_VIEW), query=PAGE),
    Op("GET", "/pricing/{model_key}", "pricing", "A model's price (the key percent-encoded)", KEY,
       answer=PRICING_VIEW),
    Op("DELETE", "/pricing/{model_key}", "pricing", "Delete a model's price", MASTER, ok=204, answer=None),
    Op("GET", "/usage", "usage", "Usage rows, newest first", MASTER, answer=_list_of(USAGE_ROW),
       query=(*PAGE, "user_id", "api_key_id", "model", "start_date", "end_date")),
    Op("GET", "/usage/summary", "usage", "Usage by day and by model", MASTER, answer=OBJECT,
       query=("user_id", "start_date", "end_date")),
    # files and batches: their groups answer 501 until they land
    *(Op(method, path, group, f"{group.title()} (not implemented yet: 501)", MASTER, answer=OBJECT,
         not_implemented=True)
      for group in ("files", "batches")
      for method, path in (("GET", f"/{group}"), ("POST", f"/{group}"), ("GET", f"/{group}/{{rest}}"),
                           ("POST", f"/{group}/{{rest}}"), ("DELETE", f"/{group}/{{rest}}"))),
    # admin
    Op("POST", "/admin/nodes/enroll", "admin", "Enroll a node agent", ENROLL,
       "isthmus_contracts.control:EnrollRequest", versioned=False),
    Op("POST", "/admin/nodes/{node_id}/heartbeat", "admin", "A node's heartbeat", ENROLL,
       "isthmus_contracts.control:HeartbeatRequest", versioned=False),
    Op("GET", "/admin/nodes", "admin", "Nodes", ADMIN, answer=_obj("nodes"), versioned=False),
    Op("DELETE", "/admin/nodes/{node_id}", "admin", "Forget a node", ADMIN, ok=204, answer=None, versioned=False),
    Op("GET", "/admin/clusters", "admin", "Clusters", ADMIN, answer=_obj("clusters"), versioned=False),
    Op("PUT", "/admin/clusters/{cluster_id}", "admin", "Create or configure a cluster", ADMIN,
       f"{_C}clusters:ClusterConfig", versioned=False),
    Op("GET", "/admin/clusters/{cluster_id}", "admin", "A cluster and its pools", ADMIN, versioned=False),
    Op("DELETE", "/admin/clusters/{cluster_id}", "admin", "Delete a cluster", ADMIN, ok=204, answer=None,
       versioned=False),
    Op("GET", "/admin/clusters/{cluster_id}/status", "admin", "A cluster's status", ADMIN, versioned=False),
    Op("POST", "/admin/clusters/{cluster_id}/load", "admin", "Load a model on a cluster's nodes", ADMIN,
       f"{_C}clusters:LoadBody", versioned=False),
    Op("POST", "/admin/clusters/{cluster_id}/unload", "admin", "Unload a pool (body optional)", ADMIN,
       f"{_C}clusters:UnloadBody", versioned=False),
    Op("POST", "/admin/{cluster_id}/load", "admin", "Load (short form)", ADMIN, f"{_C}clusters:LoadBody",
       versioned=False),
    Op("POST", "/admin/{cluster_id}/unload", "admin", "Unload (short form)", ADMIN, f"{_C}clusters:UnloadBody",
       versioned=False),
    Op("POST", "/admin/pools/reap", "admin", "Unload idle pools now", ADMIN, answer=_obj("reaped"), versioned=False),
    Op("GET", "/admin/settings", "admin", "Global settings", ADMIN, versioned=False),
    Op("PUT", "/admin/settings", "admin", "Change global settings", ADMIN, "isthmus.control.models:SettingsUpdate",
       versioned=False),
    Op("GET", "/admin/coeos", "admin", "The CoeOS router's configuration", ADMIN, versioned=False),
    Op("PUT", "/admin/coeos", "admin", "Configure the CoeOS router", ADMIN, "isthmus.routing.coeos:CoeosConfig",
       versioned=False),
    Op("GET", "/admin/coeos/decisions", "admin", "Recent CoeOS decisions", ADMIN, answer=_obj("decisions"),
       versioned=False),
    Op("GET", "/admin/providers", "admin", "Cloud providers (keys never shown)", ADMIN, answer=ARRAY,
       versioned=False),
    Op("PUT", "/admin/providers/{provider_id}", "admin", "Configure a cloud provider", ADMIN,
       "isthmus.services.cloud.providers:ProviderConfig", versioned=False),
    Op("GET", "/admin/providers/{provider_id}", "admin", "One provider", ADMIN, versioned=False),
    Op("DELETE", "/admin/providers/{provider_id}", "admin", "Delete a provider", ADMIN, ok=204, answer=None,
       versioned=False),
    Op("POST", "/admin/providers/{provider_id}/test", "admin", "A one-token call to the provider", ADMIN,
       versioned=False),
    Op("POST", "/admin/sync/rsync", "admin", "Copy a model to nodes (rsync job)", ADMIN,
       f"{_C}sync_jobs:RsyncBody", versioned=False),
    Op("GET", "/admin/sync/jobs", "admin", "Sync jobs", ADMIN, answer=_obj("jobs"), versioned=False),
    Op("GET", "/admin/sync/jobs/{job_id}", "admin", "One sync job", ADMIN, versioned=False),
    Op("POST", "/admin/sync/jobs/{job_id}/cancel", "admin", "Cancel a sync job", ADMIN, versioned=False),
    # health and the docs themselves
    Op("GET", "/health", "health", "Liveness and busy/idle", NONE, versioned=False),
    Op("GET", "/health/liveness", "health", "The process answers", NONE, versioned=False),
    Op("GET", "/health/readiness", "health", "The store answers and every table exists (else 503)", NONE,
       versioned=False),
    *(Op("GET", path, "docs", "This document (OpenAPI 3.1)", NONE, versioned=False)
      for path in ("/openapi.json", "/v1/openapi.json", "/api/v1/openapi.json")),
    Op("GET", "/docs", "docs", "This document in a browser (Swagger UI)", NONE, versioned=False, answer=None,
       content="text/html"),
    Op("GET", "/docs/{asset}", "docs", "The docs page's assets", NONE, versioned=False, answer=None, content="*/*"),
]


def dialect_of(path: str) -> str:
    from isthmus.errors import Dialect, dialect_for_path

    return {Dialect.OPENAI: "OpenAIError", Dialect.ANTHROPIC: "AnthropicError"}.get(dialect_for_path(path),
                                                                                     "ControlError")


def _model(ref: str) -> type[BaseModel]:
    import importlib

    module, _, name = ref.partition(":")
    model: type[BaseModel] = getattr(importlib.import_module(module), name)
    return model


def _operation(op: Op, path: str, schemas: dict[str, Any]) -> dict[str, Any]:
    dialect = dialect_of(path)
    statuses = INFERENCE_ERRORS if op.group == "inference" else COMMON_ERRORS
    responses: dict[str, Any] = {str(s): {"$ref": f"#/components/responses/{dialect}{s}"} for s in statuses}
    success: dict[str, Any] = {"description": "OK" if op.ok == 200 else "No content"}
    if op.not_implemented:
        operation_extra: dict[str, Any] = {"x-isthmus-not-implemented": True}
    else:
        operation_extra = {}
    if op.ok != 204:
        media: dict[str, Any] = {op.content: {"schema": op.answer} if op.answer is not None else {}}
        if op.streams:
            media["text/event-stream"] = {"schema": {"type": "string"}}
            success["description"] = "OK: a JSON answer, or server-sent events with `\"stream\": true`"
        success["content"] = media
    responses[str(op.ok)] = success
    operation: dict[str, Any] = {
        "operationId": f"{op.method.lower()}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}"
                       .replace("-", "_").replace(".", "_"),
        "summary": op.summary, "tags": [op.group], "security": op.security, "responses": responses,
        **operation_extra,
    }
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for name in _path_params(path)]
    params += [{"name": name, "in": "query", "required": False,
                "schema": {"type": "integer", "minimum": 0} if name == "skip" else
                {"type": "integer", "minimum": 1, "maximum": 1000} if name == "limit" else {"type": "string"}}
               for name in op.query]
    if params:
        operation["parameters"] = params
    if op.body == "":  # forwarded as-is
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": OBJECT}}}
    elif op.body:
        model = _model(op.body)
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    return operation


def _path_params(path: str) -> list[str]:
    return [seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")]


def _error_responses() -> dict[str, Any]:
    return {f"{dialect}{status}": {"description": text, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{dialect}"}}}}
            for dialect in ERROR_SCHEMAS for status, text in _ERROR_TEXT.items()}


@functools.cache
def document() -> dict[str, Any]:
    schemas: dict[str, Any] = dict(ERROR_SCHEMAS)
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        for path in op.paths:
            paths.setdefault(path, {})[op.method.lower()] = _operation(op, path, schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Isthmus", "version": "0.1.0",
                 "description": "An LLM gateway: OpenAI and Anthropic dialects in front of MLX node pools, "
                                "single-Mac upstreams and cloud providers, with a multi-tenant control surface. "
                                "Every /v1 route is also served under /api/v1."},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.items())), "responses": _error_responses(),
                       "securitySchemes": SECURITY_SCHEMES},
        "tags": [{"name": g} for g in dict.fromkeys(op.group for op in OPERATIONS)],
    }

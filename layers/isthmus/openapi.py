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

from isthmus.openapi_shapes import (
    ARRAY,
    BATCH,
    BATCH_LIST,
    BATCH_LIST_QUERY,
    BATCH_RESULTS,
    BUDGET_VIEW,
    CHAT_COMPLETION,
    EMBEDDINGS_BODY,
    FILE_DELETED,
    FILE_LIST,
    FILE_LIST_QUERY,
    FILE_OBJECT,
    FILE_UPLOAD_FORM,
    KEY_VIEW,
    LINKS,
    LOAD_JOB,
    LOAD_JOBS,
    LOADED,
    MESSAGE,
    MODEL_LIST,
    OBJECT,
    PRICING_VIEW,
    REAPED,
    RERANK_BODY,
    RESPONSE,
    TRANSCRIPTION_FORM,
    USAGE_ROW,
    USER_VIEW,
    list_of,
    shape_of,
)

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


@dataclass(frozen=True)
class Op:
    method: str
    path: str  # with "{name}" parameters; "/v1/..."-style paths are listed without the prefix, see ``versioned``
    group: str
    summary: str
    security: list[dict[str, list[str]]]
    # the request body: "module:Model" (imported when the document is built), several (any one of them), or a
    # JSON schema of a body the handler forwards as it came (``form``: a multipart/form-data one)
    body: str | tuple[str, ...] | dict[str, Any] | None = None
    ok: int = 200
    answer: dict[str, Any] | None = field(default_factory=lambda: OBJECT)
    streams: bool = False  # 200 may be text/event-stream (``"stream": true``)
    versioned: bool = True  # served under /v1 and /api/v1
    query: tuple[str | tuple[str, dict[str, Any]], ...] = ()  # a name (paging or a string) or (name, schema)
    content: str = "application/json"  # of the success answer ("": none, as a 204's or a redirect's)
    form: bool = False  # the body is multipart/form-data
    also: tuple[tuple[int, str, dict[str, Any] | None], ...] = ()  # other answers: (status, what, JSON schema)

    @property
    def paths(self) -> list[str]:
        return [f"{p}{self.path}" for p in ("/v1", "/api/v1")] if self.versioned else [self.path]


_D = "isthmus.dialects."
_T = "isthmus.services.tenancy."
_C = "isthmus.services.control."
_B = "isthmus.services.batches."
PAGE = ("skip", "limit")
LOAD_ACCEPTED = ((202, "Accepted: a load job (`wait: false`), its progress at .../loads/{job_id}", LOAD_JOB),)
NOT_MODIFIED = ((304, "Not modified (`If-None-Match` holds its ETag)", None),)
OPERATIONS: list[Op] = [
    # inference (dialect errors)
    Op("POST", "/chat/completions", "inference", "Chat completion (OpenAI)", KEY,
       f"{_D}openai_chat_models:ChatCompletionRequest", answer=CHAT_COMPLETION, streams=True),
    Op("POST", "/messages", "inference", "Message (Anthropic)", KEY, f"{_D}anthropic_models:MessagesRequest",
       answer=MESSAGE, streams=True),
    Op("POST", "/messages/count_tokens", "inference", "Count a message's input tokens (Anthropic)", KEY,
       f"{_D}anthropic_models:CountTokensRequest", answer=shape_of("input_tokens")),
    Op("POST", "/responses", "inference", "Create a response (OpenAI Responses)", KEY,
       f"{_D}openai_responses_models:ResponsesRequest", answer=RESPONSE, streams=True),
    Op("GET", "/responses/{response_id}", "inference", "A stored response", KEY, answer=RESPONSE),
    Op("DELETE", "/responses/{response_id}", "inference", "Delete a stored response", KEY,
       answer=shape_of("id", "deleted")),
    *(Op("POST", path, "inference", f"{what} (forwarded to an OpenAI-protocol cloud alias)", KEY, answer=None,
         content="*/*", body=OBJECT)
      for path, what in (("/moderations", "Moderations"), ("/images/generations", "Image generation"),
                         ("/audio/speech", "Speech"))),
    Op("POST", "/embeddings", "inference", "Embeddings: forwarded to an OpenAI-protocol cloud alias, else routed like "
       "a chat to a node pool, single-Mac upstream or default agent serving an embedding model", KEY,
       EMBEDDINGS_BODY, answer=None, content="*/*"),
    Op("POST", "/rerank", "inference", "Rerank (an alias published with the `rerank` capability)", KEY, RERANK_BODY,
       answer=None, content="*/*"),
    Op("POST", "/audio/transcriptions", "inference", "Transcription, multipart (an alias published with the "
       "`transcription` capability; the form forwarded byte for byte, its model part rewritten)", KEY,
       TRANSCRIPTION_FORM, form=True, answer=None, content="*/*"),
    Op("GET", "/models", "models", "Servable models (with x_odyssai)", KEY, answer=MODEL_LIST,
       query=("include_unloaded",)),
    Op("GET", "/models/{model_id}", "models", "One model (the id may contain '/')", KEY, answer=shape_of("id")),
    # management (master key)
    Op("POST", "/keys", "keys", "Create a virtual key (its secret is shown once)", MASTER, f"{_T}keys:CreateKey",
       answer=shape_of("id", "key", "created_at", "is_active")),
    Op("GET", "/keys", "keys", "List keys", MASTER, answer=list_of(KEY_VIEW), query=PAGE),
    Op("GET", "/keys/{key_id}", "keys", "One key", MASTER, answer=KEY_VIEW),
    Op("PATCH", "/keys/{key_id}", "keys", "Update a key", MASTER, f"{_T}keys:UpdateKey", answer=KEY_VIEW),
    Op("DELETE", "/keys/{key_id}", "keys", "Delete a key", MASTER, ok=204, answer=None),
    Op("POST", "/keys/{key_id}/rotate", "keys", "Rotate a key", MASTER, answer=shape_of("id", "key")),
    Op("POST", "/users", "users", "Create a user", MASTER, f"{_T}users:CreateUser", answer=USER_VIEW),
    Op("GET", "/users", "users", "List users", MASTER, answer=list_of(USER_VIEW), query=PAGE),
    Op("GET", "/users/{user_id}", "users", "One user", MASTER, answer=USER_VIEW),
    Op("PATCH", "/users/{user_id}", "users", "Update a user", MASTER, f"{_T}users:UpdateUser", answer=USER_VIEW),
    Op("DELETE", "/users/{user_id}", "users", "Delete a user", MASTER, ok=204, answer=None),
    Op("GET", "/users/{user_id}/usage", "users", "A user's usage rows", MASTER, answer=list_of(USAGE_ROW),
       query=(*PAGE, "start_date", "end_date")),
    Op("POST", "/budgets", "budgets", "Create a budget", MASTER, f"{_T}budgets:CreateBudget", answer=BUDGET_VIEW),
    Op("GET", "/budgets", "budgets", "List budgets", MASTER, answer=list_of(BUDGET_VIEW), query=PAGE),
    Op("GET", "/budgets/{budget_id}", "budgets", "One budget", MASTER, answer=BUDGET_VIEW),
    Op("PATCH", "/budgets/{budget_id}", "budgets", "Update a budget", MASTER, f"{_T}budgets:UpdateBudget",
       answer=BUDGET_VIEW),
    Op("DELETE", "/budgets/{budget_id}", "budgets", "Delete a budget", MASTER, ok=204, answer=None),
    Op("GET", "/budgets/{budget_id}/reset-logs", "budgets", "A budget's resets", MASTER, answer=ARRAY, query=PAGE),
    Op("POST", "/pricing", "pricing", "Set a model's price", MASTER, f"{_T}pricing:SetPricing", answer=PRICING_VIEW),
    Op("GET", "/pricing", "pricing", "List prices", KEY, answer=list_of(PRICING_VIEW), query=PAGE),
    Op("GET", "/pricing/{model_key}", "pricing", "A model's price (the key percent-encoded)", KEY,
       answer=PRICING_VIEW),
    Op("DELETE", "/pricing/{model_key}", "pricing", "Delete a model's price", MASTER, ok=204, answer=None),
    Op("GET", "/usage", "usage", "Usage rows, newest first", MASTER, answer=list_of(USAGE_ROW),
       query=(*PAGE, "user_id", "api_key_id", "model", "start_date", "end_date")),
    Op("GET", "/usage/summary", "usage", "Usage by day and by model", MASTER, answer=OBJECT,
       query=("user_id", "start_date", "end_date")),
    # files (OpenAI's Files API: any key; a key sees its user's files, the master key and open mode every file)
    Op("POST", "/files", "files", "Upload a file (multipart: file, purpose, expires_after)", KEY, FILE_UPLOAD_FORM,
       form=True, answer=FILE_OBJECT),
    Op("GET", "/files", "files", "The caller's files, newest first", KEY, answer=FILE_LIST, query=FILE_LIST_QUERY),
    Op("GET", "/files/{file_id}", "files", "A file object", KEY, answer=FILE_OBJECT),
    Op("DELETE", "/files/{file_id}", "files", "Delete a file", KEY, answer=FILE_DELETED),
    Op("GET", "/files/{file_id}/content", "files", "A file's bytes (its own content type)", KEY, answer=None,
       content="*/*"),
    # batches (OpenAI's Batch API, and Otari's inline shape with its `provider` echoed; any key, a key sees its own)
    Op("POST", "/batches", "batches", "Create a batch: OpenAI's (an input file) or Otari's (model + requests inline)",
       KEY, (f"{_B}intake:CreateOpenAIBatch", f"{_B}intake:CreateOtariBatch"), answer=BATCH, query=("provider",)),
    Op("GET", "/batches", "batches", "The caller's batches, newest first", KEY, answer=BATCH_LIST,
       query=BATCH_LIST_QUERY),
    Op("GET", "/batches/{batch_id}", "batches", "A batch and its progress", KEY, answer=BATCH, query=("provider",)),
    Op("POST", "/batches/{batch_id}/cancel", "batches", "Cancel a batch (what finished is kept)", KEY, answer=BATCH,
       query=("provider",)),
    Op("GET", "/batches/{batch_id}/results", "batches", "A finished batch's results, in input order (Otari's; 409 "
       "until it is finished)", KEY, answer=BATCH_RESULTS, query=("provider",)),
    # admin
    Op("POST", "/admin/nodes/enroll", "admin", "Enroll a node agent", ENROLL,
       "isthmus_contracts.control:EnrollRequest", versioned=False),
    Op("POST", "/admin/nodes/{node_id}/heartbeat", "admin", "A node's heartbeat", ENROLL,
       "isthmus_contracts.control:HeartbeatRequest", versioned=False),
    Op("GET", "/admin/nodes", "admin", "Nodes", ADMIN, answer=shape_of("nodes"), versioned=False),
    Op("DELETE", "/admin/nodes/{node_id}", "admin", "Forget a node", ADMIN, ok=204, answer=None, versioned=False),
    Op("GET", "/admin/clusters", "admin", "Clusters", ADMIN, answer=shape_of("clusters"), versioned=False),
    Op("PUT", "/admin/clusters/{cluster_id}", "admin", "Create or configure a cluster", ADMIN,
       f"{_C}clusters:ClusterConfig", versioned=False),
    Op("GET", "/admin/clusters/{cluster_id}", "admin", "A cluster and its pools", ADMIN, versioned=False),
    Op("DELETE", "/admin/clusters/{cluster_id}", "admin", "Delete a cluster", ADMIN, ok=204, answer=None,
       versioned=False),
    Op("GET", "/admin/clusters/{cluster_id}/status", "admin", "A cluster's status", ADMIN, versioned=False),
    Op("POST", "/admin/clusters/{cluster_id}/load", "admin", "Load a model on a cluster's nodes (sharded: over "
       "them as one MLX distributed group); `wait: false`: 202 with a load job at once", ADMIN,
       f"{_C}clusters:LoadBody", answer=LOADED, also=LOAD_ACCEPTED, versioned=False),
    Op("GET", "/admin/clusters/{cluster_id}/loads", "admin", "A cluster's load jobs, newest first", ADMIN,
       answer=LOAD_JOBS, versioned=False),
    Op("GET", "/admin/clusters/{cluster_id}/loads/{job_id}", "admin", "A load job and its progress", ADMIN,
       answer=LOAD_JOB, versioned=False),
    Op("POST", "/admin/clusters/{cluster_id}/unload", "admin", "Unload a pool (body optional)", ADMIN,
       f"{_C}clusters:UnloadBody", versioned=False),
    Op("POST", "/admin/{cluster_id}/load", "admin", "Load (short form)", ADMIN, f"{_C}clusters:LoadBody",
       answer=LOADED, also=LOAD_ACCEPTED, versioned=False),
    Op("POST", "/admin/{cluster_id}/unload", "admin", "Unload (short form)", ADMIN, f"{_C}clusters:UnloadBody",
       versioned=False),
    Op("POST", "/admin/pools/reap", "admin", "Unload idle pools now, reload sharded pools that lost a rank", ADMIN,
       answer=REAPED, versioned=False),
    Op("GET", "/admin/settings", "admin", "Global settings", ADMIN, versioned=False),
    Op("PUT", "/admin/settings", "admin", "Change global settings", ADMIN, "isthmus.control.models:SettingsUpdate",
       versioned=False),
    Op("GET", "/admin/coeos", "admin", "The CoeOS router's configuration", ADMIN, versioned=False),
    Op("PUT", "/admin/coeos", "admin", "Configure the CoeOS router", ADMIN, "isthmus.routing.coeos:CoeosConfig",
       versioned=False),
    Op("GET", "/admin/coeos/decisions", "admin", "Recent CoeOS decisions", ADMIN, answer=shape_of("decisions"),
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
    Op("GET", "/admin/sync/jobs", "admin", "Sync jobs", ADMIN, answer=shape_of("jobs"), versioned=False),
    Op("GET", "/admin/sync/jobs/{job_id}", "admin", "One sync job", ADMIN, versioned=False),
    Op("POST", "/admin/sync/jobs/{job_id}/cancel", "admin", "Cancel a sync job", ADMIN, versioned=False),
    # the dashboard's static files (public: every page calls the APIs above with the operator's token)
    Op("GET", "/dashboard", "dashboard", "To /dashboard/", NONE, ok=308, content="", versioned=False),
    Op("GET", "/dashboard/", "dashboard", "The dashboard (strict CSP)", NONE, answer=None, content="text/html",
       also=NOT_MODIFIED, versioned=False),
    Op("GET", "/dashboard/{path}", "dashboard", "The dashboard's modules and stylesheet", NONE, answer=None,
       content="*/*", also=NOT_MODIFIED, versioned=False),
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


_SUCCESS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No content", 308: "Permanent redirect"}


def _query_param(query: str | tuple[str, dict[str, Any]]) -> dict[str, Any]:
    name, schema = query if isinstance(query, tuple) else (
        query, {"type": "integer", "minimum": 0} if query == "skip" else
        {"type": "integer", "minimum": 1, "maximum": 1000} if query == "limit" else {"type": "string"})
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _model_ref(ref: str, schemas: dict[str, Any]) -> dict[str, Any]:
    model = _model(ref)
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _request_body(op: Op, schemas: dict[str, Any]) -> dict[str, Any]:
    if isinstance(op.body, dict):  # a body the handler forwards (or reads) as it came
        media = "multipart/form-data" if op.form else "application/json"
        return {"required": True, "content": {media: {"schema": op.body}}}
    refs = [op.body] if isinstance(op.body, str) else list(op.body or ())
    schema = _model_ref(refs[0], schemas) if len(refs) == 1 else {"anyOf": [_model_ref(r, schemas) for r in refs]}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _operation_id(method: str, path: str) -> str:
    words = path.strip("/").replace("{", "").replace("}", "") + ("/index" if path.endswith("/") else "")
    return f"{method.lower()}_{words.replace('/', '_')}".replace("-", "_").replace(".", "_")


def _operation(op: Op, path: str, schemas: dict[str, Any]) -> dict[str, Any]:
    dialect = dialect_of(path)
    statuses = INFERENCE_ERRORS if op.group == "inference" else COMMON_ERRORS
    responses: dict[str, Any] = {str(s): {"$ref": f"#/components/responses/{dialect}{s}"} for s in statuses}
    success: dict[str, Any] = {"description": _SUCCESS_TEXT.get(op.ok, "OK")}
    if op.content and op.ok != 204:
        media: dict[str, Any] = {op.content: {"schema": op.answer} if op.answer is not None else {}}
        if op.streams:
            media["text/event-stream"] = {"schema": {"type": "string"}}
            success["description"] = "OK: a JSON answer, or server-sent events with `\"stream\": true`"
        success["content"] = media
    responses[str(op.ok)] = success
    for status, what, schema in op.also:
        responses[str(status)] = {"description": what, **(
            {"content": {"application/json": {"schema": schema}}} if schema is not None else {})}
    prefix = path[:len(path) - len(op.path)]  # "/v1", "/api/v1" or ""
    for status in (op.ok, *(also[0] for also in op.also)):
        for method, target, parameters in LINKS.get((op.method, op.path, status), ()):
            target_id = _operation_id(method, prefix + target)
            responses[str(status)].setdefault("links", {})[target_id] = {"operationId": target_id,
                                                                         "parameters": parameters}
    operation: dict[str, Any] = {
        "operationId": _operation_id(op.method, path),
        "summary": op.summary, "tags": [op.group], "security": op.security, "responses": responses,
    }
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for name in _path_params(path)]
    params += [_query_param(query) for query in op.query]
    if params:
        operation["parameters"] = params
    if op.body is not None:
        operation["requestBody"] = _request_body(op, schemas)
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

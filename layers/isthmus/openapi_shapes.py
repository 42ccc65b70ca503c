"""JSON schemas of the answers (and the few request bodies) that no pydantic model describes: what a handler shapes
as a dict. Each stays true to its handler's answer: schemathesis (tests/contracts/test_schemathesis.py) checks every
answer of the local edge against them, so a schema here that promises more than the handler gives fails there.
Also the links between operations (an answer's id and the operations it leads to)."""

from __future__ import annotations

from typing import Any

OBJECT: dict[str, Any] = {"type": "object"}
ARRAY: dict[str, Any] = {"type": "array", "items": {"type": "object"}}
STRING: dict[str, Any] = {"type": "string"}
NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}  # a multipart file part


def shape_of(*required: str, **properties: dict[str, Any]) -> dict[str, Any]:
    shape: dict[str, Any] = {"type": "object", "required": list(required)}
    if properties:
        shape["properties"] = properties
    return shape


def list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


# ---- tenancy and inference (the dialects' models describe the requests; these the answers) --------------------
KEY_VIEW = shape_of("id", "created_at", "is_active", "exclude_from_budget", "metadata")
USER_VIEW = shape_of("user_id", "blocked", "spend", "reserved", "created_at", "updated_at", "metadata")
BUDGET_VIEW = shape_of("budget_id", "created_at", "updated_at")
PRICING_VIEW = shape_of("model_key", "input_price_per_million", "output_price_per_million", "effective_at",
                        "created_at", "updated_at", "pricing_tiers")
USAGE_ROW = shape_of("id", "model", "endpoint", "status", "timestamp", "source", "counts_toward_budget")
MODEL_LIST = {"type": "object", "required": ["object", "data"],
              "properties": {"object": {"const": "list"}, "data": ARRAY}}
CHAT_COMPLETION = shape_of("id", "object", "created", "model", "choices")
MESSAGE = shape_of("id", "type", "role", "content", "model")
RESPONSE = shape_of("id", "object", "status", "output")

# ---- raw passthrough bodies (forwarded as they came: only ``model`` is read, a 400 without it) -----------------
EMBEDDINGS_BODY = shape_of("model", "input", model=STRING,
                           input={"description": "A string, a list of strings, or token ids (as OpenAI's)."})
RERANK_BODY = shape_of("model", "query", "documents", model=STRING, query=STRING,
                       documents={"type": "array", "items": {}}, top_n={"type": "integer", "minimum": 1})
TRANSCRIPTION_FORM = shape_of("file", "model", file=BINARY, model=STRING, language=STRING, prompt=STRING,
                              response_format=STRING)

# ---- files (isthmus.services.files.wire: file_object, file_list; OpenAI's Files API) ----------------------------
UPLOAD_PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"]  # wire.UPLOAD_PURPOSES
MAX_FILE_EXPIRY_S = 30 * 24 * 3600  # wire.MAX_EXPIRY_SECONDS
MAX_FILE_LIST = 10_000  # wire.MAX_LIST_LIMIT
_EXPIRES_AFTER: dict[str, dict[str, Any]] = {  # the openai SDK's form names
    "expires_after[anchor]": {"const": "created_at"},
    "expires_after[seconds]": {"type": "integer", "minimum": 1, "maximum": MAX_FILE_EXPIRY_S}}
FILE_UPLOAD_FORM = shape_of("file", "purpose", file=BINARY, purpose={"type": "string", "enum": UPLOAD_PURPOSES},
                            **_EXPIRES_AFTER)
FILE_OBJECT = shape_of("id", "object", "bytes", "created_at", "expires_at", "filename", "purpose", "status",
                       id=STRING, object={"const": "file"}, bytes=INTEGER, created_at=INTEGER,
                       expires_at={"type": ["integer", "null"]}, filename=STRING, purpose=STRING,
                       status={"const": "processed"}, status_details={"type": "null"})
FILE_LIST = shape_of("object", "data", "has_more", "first_id", "last_id", object={"const": "list"},
                     data=list_of(FILE_OBJECT), has_more={"type": "boolean"}, first_id=NULLABLE_STRING,
                     last_id=NULLABLE_STRING)
FILE_DELETED = shape_of("id", "object", "deleted", id=STRING, object={"const": "file"}, deleted={"const": True})
FILE_LIST_QUERY: tuple[tuple[str, dict[str, Any]], ...] = (
    ("purpose", STRING), ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_FILE_LIST}),
    ("after", STRING), ("order", {"type": "string", "enum": ["asc", "desc"]}))

# ---- batches (isthmus.services.batches.model.Batch.to_openai: OpenAI's batch object, Otari's model/provider) -----
_TIMES = {f"{k}_at": {"type": ["integer", "null"]} for k in ("in_progress", "finalizing", "completed", "failed",
                                                            "expired", "cancelling", "cancelled")}
BATCH = shape_of(
    "id", "object", "endpoint", "errors", "input_file_id", "completion_window", "status", "output_file_id",
    "error_file_id", "created_at", "expires_at", *_TIMES, "request_counts", "metadata",
    id=STRING, object={"const": "batch"}, endpoint=STRING, input_file_id=STRING, completion_window=STRING,
    errors={"type": ["object", "null"], "required": ["object", "data"],
            "properties": {"object": {"const": "list"}, "data": list_of(shape_of("code", "message"))}},
    status={"type": "string", "enum": ["validating", "in_progress", "finalizing", "completed", "failed", "expired",
                                       "cancelling", "cancelled"]},
    output_file_id=NULLABLE_STRING, error_file_id=NULLABLE_STRING, created_at=INTEGER, expires_at=INTEGER, **_TIMES,
    request_counts=shape_of("total", "completed", "failed", total=INTEGER, completed=INTEGER, failed=INTEGER),
    metadata={"type": ["object", "null"], "additionalProperties": STRING}, model=STRING,
    provider=NULLABLE_STRING)
BATCH_LIST = shape_of("object", "data", "first_id", "last_id", "has_more", object={"const": "list"},
                      data=list_of(BATCH), first_id=NULLABLE_STRING, last_id=NULLABLE_STRING,
                      has_more={"type": "boolean"})
BATCH_LIST_QUERY: tuple[tuple[str, dict[str, Any]], ...] = (
    ("after", STRING), ("limit", {"type": "integer", "minimum": 1, "maximum": 100}), ("provider", STRING))
BATCH_RESULTS = shape_of("results", results=list_of(shape_of(
    "custom_id", "result", "error", custom_id=STRING, result={},
    error={"type": ["object", "null"], "required": ["code", "message"],
           "properties": {"code": STRING, "message": STRING}})))

# ---- admin: loads (isthmus.services.control.clusters.load, load_jobs.LoadJobService), reaping ------------------
_COUNTS = {k: INTEGER for k in ("layers_done", "layers_total", "bytes_done", "bytes_total")}
LOADED = shape_of("loaded", "cluster", "alias", "model", "nodes", "mode", "load_s",
                  loaded={"const": True}, cluster=STRING, alias=STRING, model=STRING, nodes=list_of(STRING),
                  mode=STRING, load_s=NUMBER, failed={"type": "object", "additionalProperties": STRING},
                  # a sharded load (one model over the nodes as an MLX distributed group): its ranks in order
                  ranks=list_of(STRING), hosts=list_of(STRING), backend=STRING,
                  param_bytes={"type": "object", "additionalProperties": {"type": ["integer", "null"]}})  # by node
LOAD_JOB_NODE = shape_of("node_id", "state", **_COUNTS, node_id=STRING,
                         state={"type": "string", "enum": ["loading", "done", "failed"]}, error=NULLABLE_STRING)
LOAD_JOB = shape_of("id", "cluster", "alias", "model", "mode", "state", "created_at", "nodes", "percent", *_COUNTS,
                    **_COUNTS, id=STRING, cluster=STRING, alias=STRING, model=STRING, mode=STRING,
                    state={"type": "string", "enum": ["running", "done", "failed"]}, created_at=STRING,
                    nodes=list_of(LOAD_JOB_NODE), percent=NUMBER, error=STRING, finished_at=STRING)
LOAD_JOBS = shape_of("jobs", jobs=list_of(LOAD_JOB))
REAPED = shape_of("reaped", "healed",
                  reaped=list_of(shape_of("cluster", "alias", "idle_s", "ttl_seconds", cluster=STRING, alias=STRING,
                                          idle_s=NUMBER, ttl_seconds=INTEGER)),
                  healed=list_of(shape_of("cluster", "alias", "note", cluster=STRING, alias=STRING, note=STRING)))


# Where an answer leads (OpenAPI links, followed by code generators, Swagger UI and schemathesis's stateful run):
# (method, path, status) of an operation -> (method, path, {parameter: runtime expression}) of the next ones.
Link = tuple[str, str, dict[str, str]]


def _onto(expression: str, parameter: str, *targets: tuple[str, str]) -> tuple[Link, ...]:
    return tuple((method, path, {parameter: expression}) for method, path in targets)


_CLUSTER = "$request.path.cluster_id"
LINKS: dict[tuple[str, str, int], tuple[Link, ...]] = {
    ("POST", "/files", 200): _onto("$response.body#/id", "file_id", ("GET", "/files/{file_id}"),
                                   ("GET", "/files/{file_id}/content"), ("DELETE", "/files/{file_id}")),
    ("POST", "/keys", 200): _onto("$response.body#/id", "key_id", ("GET", "/keys/{key_id}"),
                                  ("PATCH", "/keys/{key_id}"), ("POST", "/keys/{key_id}/rotate"),
                                  ("DELETE", "/keys/{key_id}")),
    ("POST", "/users", 200): _onto("$response.body#/user_id", "user_id", ("GET", "/users/{user_id}"),
                                   ("PATCH", "/users/{user_id}"), ("GET", "/users/{user_id}/usage"),
                                   ("DELETE", "/users/{user_id}")),
    ("POST", "/budgets", 200): _onto("$response.body#/budget_id", "budget_id", ("GET", "/budgets/{budget_id}"),
                                     ("PATCH", "/budgets/{budget_id}"), ("GET", "/budgets/{budget_id}/reset-logs"),
                                     ("DELETE", "/budgets/{budget_id}")),
    ("POST", "/pricing", 200): _onto("$response.body#/model_key", "model_key", ("GET", "/pricing/{model_key}"),
                                     ("DELETE", "/pricing/{model_key}")),
    ("POST", "/responses", 200): _onto("$response.body#/id", "response_id", ("GET", "/responses/{response_id}"),
                                       ("DELETE", "/responses/{response_id}")),
    ("POST", "/batches", 200): _onto("$response.body#/id", "batch_id", ("GET", "/batches/{batch_id}"),
                                     ("POST", "/batches/{batch_id}/cancel"), ("GET", "/batches/{batch_id}/results")),
    ("PUT", "/admin/clusters/{cluster_id}", 200): _onto(
        _CLUSTER, "cluster_id", ("GET", "/admin/clusters/{cluster_id}"), ("GET", "/admin/clusters/{cluster_id}/status"),
        ("POST", "/admin/clusters/{cluster_id}/load"), ("GET", "/admin/clusters/{cluster_id}/loads"),
        ("POST", "/admin/clusters/{cluster_id}/unload"), ("DELETE", "/admin/clusters/{cluster_id}")),
    ("POST", "/admin/clusters/{cluster_id}/load", 202): (
        ("GET", "/admin/clusters/{cluster_id}/loads/{job_id}",
         {"cluster_id": _CLUSTER, "job_id": "$response.body#/id"}),),
    ("PUT", "/admin/providers/{provider_id}", 200): _onto(
        "$request.path.provider_id", "provider_id", ("GET", "/admin/providers/{provider_id}"),
        ("POST", "/admin/providers/{provider_id}/test"), ("DELETE", "/admin/providers/{provider_id}")),
}

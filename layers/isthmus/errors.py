"""One error module for every surface.

Three dialects answer errors in three shapes:
- OpenAI routes:      {"error": {"message", "type", "param", "code"}}
- Anthropic routes:   {"type": "error", "error": {"type", "message"}}
- control surface:    {"detail": ...}
Services raise :class:`ApiError`; the web layer renders it for the caller's dialect.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")


class Dialect(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    CONTROL = "control"


# The control surface's groups under /v1; every other /v1 path (served or not) is the OpenAI API's.
# files and batches answer in OpenAI's error shape (the openai SDK and otari clients parse it)
_CONTROL_GROUPS = frozenset({"keys", "users", "budgets", "pricing", "usage"})


def dialect_for_path(path: str) -> Dialect:
    """The dialect a caller of ``path`` expects errors in (``/api/v1`` is the same as ``/v1``). An unknown
    ``/v1/*`` path is OpenAI's (an SDK pointed at the wrong route still parses the 404)."""
    if path.startswith("/api/"):
        path = path[4:]
    if path.startswith("/v1/messages"):
        return Dialect.ANTHROPIC
    if path == "/v1" or path.startswith("/v1/"):
        group = path[4:].split("/", 1)[0]
        return Dialect.CONTROL if group in _CONTROL_GROUPS else Dialect.OPENAI
    return Dialect.CONTROL


# The inference function's routes and methods (pinned to template.yaml by tests/unit/test_bad_input.py). API
# Gateway sends a wrong method on them to the catch-all, which answers 405 with these, as the function would.
_INFERENCE_METHODS: tuple[tuple[re.Pattern[str], tuple[str, ...]], ...] = (
    (re.compile(r"^/v1/(chat/completions|messages|messages/count_tokens|responses|embeddings|moderations"
                r"|images/generations|audio/speech|audio/transcriptions|rerank)/?$"), ("POST",)),
    (re.compile(r"^/v1/responses/[^/]+/?$"), ("GET", "DELETE")),
    (re.compile(r"^/v1/models(/.+)?/?$"), ("GET",)),
)


def allowed_methods(path: str) -> tuple[str, ...] | None:
    """The methods an inference route allows, or None when ``path`` is no inference route."""
    if path.startswith("/api/"):
        path = path[4:]
    return next((methods for pattern, methods in _INFERENCE_METHODS if pattern.match(path)), None)


def method_not_allowed(method: str, path: str, allowed: Sequence[str]) -> ApiError:
    return ApiError(405, f"Method {method} is not allowed on {path}; use {', '.join(allowed)}.",
                    code="method_not_allowed", headers={"Allow": ", ".join(allowed)})


# Anthropic names error types by status; OpenAI uses a handful of types with codes.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    414: "invalid_request_error",
    422: "invalid_request_error",
    431: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}


class ApiError(Exception):
    """An error with an HTTP status that every dialect knows how to render."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
        detail: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}
        self.detail = detail  # control surface: a structured detail (e.g. validation errors)

    def body(self, dialect: Dialect) -> dict[str, Any]:
        return error_body(dialect, self.status, self.message, code=self.code, param=self.param,
                          error_type=self.error_type, detail=self.detail)


class AgentUnreachable(ApiError):
    """The agent could not take the request (no connection, no answer in time, or a 503: not serving);
    ``agent_code`` is the code of the agent's own 503 when it sent one (``model_loading``, ``queue_full``...).
    Here, not in the agent adapter, so the pure routing layer can classify it without importing an adapter."""

    def __init__(self, base_url: str, reason: str, *, agent_code: str | None = None) -> None:
        super().__init__(502, f"node agent at {base_url} is unreachable ({reason})", code="agent_unreachable")
        self.base_url = base_url
        self.agent_code = agent_code


def error_body(
    dialect: Dialect,
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    error_type: str | None = None,
    detail: Any = None,
) -> dict[str, Any]:
    if dialect is Dialect.ANTHROPIC:
        kind = error_type or _ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if dialect is Dialect.OPENAI:
        kind = error_type or _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {"detail": detail if detail is not None else message}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def not_found(message: str, *, code: str | None = None) -> ApiError:
    return ApiError(404, message, code=code)


def validation_error(errors: Sequence[Mapping[str, Any]], dialect: Dialect) -> ApiError:
    """A pydantic ValidationError's ``errors()`` as one ApiError naming the first bad field.

    Inference dialects answer 400 (as OpenAI and Anthropic do); the control surface answers 422 with the
    whole list in ``detail``, as FastAPI-based Otari does (its client reads ``detail``).
    """
    first: Mapping[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
    if dialect is Dialect.CONTROL:
        detail = [{"loc": ["body", *e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
                  for e in errors]
        return ApiError(422, message, param=loc or None, detail=detail)
    return ApiError(400, message, param=loc or None, code="invalid_value")


def found(item: T | None, message: str) -> T:
    """``item``, or the 404 ``message`` when the store has none (a record looked up by the id in the path)."""
    if item is None:
        raise ApiError(404, message)
    return item


# ---- the store ----------------------------------------------------------------------------------------------
# Here, not in the DynamoDB adapters, so that services and the web layer judge a store error without importing
# an adapter (the import-graph test keeps services on ports).

STORE_RETRY_AFTER_S = "2"


def store_unavailable(exc: BaseException) -> ApiError:
    """A store error we cannot answer around: 503 + Retry-After (never a silent allow)."""
    return ApiError(503, f"The metadata store is unavailable ({type(exc).__name__}); try again.",
                    code="store_unavailable", headers={"Retry-After": STORE_RETRY_AFTER_S})


class StoreCircuitOpen(Exception):
    """The store did not answer its last attempts; this one was not sent (isthmus.adapters.store_breaker)."""


def store_failure(exc: BaseException) -> ApiError | None:
    """The 503 for an error raised by the store's client (botocore: timeouts, connection errors, throttling,
    service errors; or its open circuit breaker), else None. Judged by the exception's module so that callers
    need not import botocore."""
    if not isinstance(exc, StoreCircuitOpen) and type(exc).__module__.partition(".")[0] != "botocore":
        return None
    return store_unavailable(exc)

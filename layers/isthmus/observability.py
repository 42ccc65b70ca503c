"""Powertools Logger / Metrics / Tracer for every entry point, with the request id on each log line.

Why the tracer is built lazily: constructing ``Tracer`` imports the X-Ray SDK and botocore (~680 ms on
this machine), which would dominate a handler's cold import. It is created on the first Lambda invoke,
and only when tracing is on (``POWERTOOLS_TRACE_DISABLED`` not true and running inside Lambda).
"""

from __future__ import annotations

import contextvars
import logging
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from isthmus import lambda_init

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("isthmus_request_id", default=None)

_loggers: dict[str, Logger] = {}
_metrics: dict[str, Metrics] = {}


class _RequestIdFilter(logging.Filter):
    """Stamps the current request id (a contextvar, so safe under asyncio concurrency) on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id_var.get()
        if rid is not None and not hasattr(record, "request_id"):
            record.request_id = rid
        return True


def get_logger(service: str) -> Logger:
    logger = _loggers.get(service)
    if logger is None:
        logger = Logger(service=service)
        logger.addFilter(_RequestIdFilter())
        _loggers[service] = logger
    return logger


def get_metrics(service: str) -> Metrics:
    metrics = _metrics.get(service)
    if metrics is None:
        metrics = Metrics(service=service, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Isthmus"))
        _metrics[service] = metrics
    return metrics


def tracing_enabled() -> bool:
    disabled = os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() in {"1", "true", "yes"}
    return not disabled and bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


class _Inflight:
    """Requests in progress in this process: /health reports busy when any is; batch lines wait while
    ``inference`` (those on inference routes) are."""

    def __init__(self) -> None:
        self.count = 0
        self.inference = 0

    @property
    def busy(self) -> bool:
        return self.count > 0

    @property
    def inference_busy(self) -> bool:
        return self.inference > 0


inflight = _Inflight()

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_entry(app: Any, service: str, *, store: bool = True,
                 prepare: Callable[[], object] | None = None) -> LambdaHandler:
    """``handler = Mangum(app)`` wrapped with Powertools: correlation id, cold-start metric, tracing.

    In a Lambda sandbox the function's init also makes what its first request would otherwise wait for
    (:func:`isthmus.lambda_init.prepare`): the store client (``store``: botocore and its DynamoDB model), ``prepare()``
    (the function's service objects and the imports they pull in) and the deferred pydantic schemas."""
    # cold start: Mangum only in a Lambda handler, not the edge's asgi mode
    from mangum import Mangum

    logger = get_logger(service)
    metrics = get_metrics(service)
    mangum = Mangum(app, lifespan="off")
    traced: dict[str, LambdaHandler] = {}

    def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
        metrics.add_metric(name="Invocations", unit=MetricUnit.Count, value=1)
        return mangum(event, context)

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if not tracing_enabled():
            return invoke(event, context)
        if "fn" not in traced:
            # cold start: the tracer on the first invoke, not at init
            from aws_lambda_powertools import Tracer

            traced["fn"] = Tracer(service=service).capture_lambda_handler(invoke, capture_response=False)
        return traced["fn"](event, context)

    lambda_init.prepare(*([prepare] if prepare else []), store=store)  # last: it ends init with gc.freeze()
    return handler

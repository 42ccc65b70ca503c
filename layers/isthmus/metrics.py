"""The one metrics facade: the code calls ``metrics.request_done(...)``, ``metrics.tokens(...)`` etc., and this
writes them to prometheus-client in a long-running process (the edge, a node agent: scraped at ``/metrics``) or
as CloudWatch EMF lines through Powertools in a Lambda sandbox, under the same names.

Which sink: ``ISTHMUS_METRICS`` = ``prometheus`` | ``emf`` | ``off``; unset, EMF inside AWS Lambda
(``AWS_LAMBDA_FUNCTION_NAME``) and Prometheus elsewhere. Chosen on the first call, so a Lambda cold start never
imports prometheus-client and an edge never builds an EMF blob.

Why the label children are cached here: prometheus-client's ``.labels(...)`` takes a lock and builds a key each
call; a dict lookup on the label tuple keeps every call on the request path to about a microsecond.
"""

from __future__ import annotations

import contextvars
import os
import time
from decimal import Decimal
from typing import Any

NAMESPACE = "Isthmus"

# name -> (kind, help, label names). Prometheus appends ``_total`` to a counter's name when it exposes it, so the
# names here are the exposed ones and EMF uses the same strings.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "isthmus_requests_total": ("counter", "HTTP requests answered, by route template, model, backend and status",
                               ("route", "model", "backend", "status")),
    "isthmus_request_duration_seconds": ("histogram", "Time to the end of the answer (a stream: its last byte)",
                                         ("route", "model", "backend", "status")),
    "isthmus_tokens_total": ("counter", "Tokens billed, by direction (in, out, cached)",
                             ("model", "backend", "direction")),
    "isthmus_spend_usd_total": ("counter", "Cost charged to budgets, USD", ("model",)),
    "isthmus_budget_refusals_total": ("counter", "Requests refused for want of budget", ("model",)),
    "isthmus_rate_limit_refusals_total": ("counter", "Requests refused by a key's rate limit", ("kind",)),
    "isthmus_upstream_retries_total": ("counter", "Cloud provider calls retried before the first byte",
                                       ("provider",)),
    "isthmus_upstream_fallbacks_total": ("counter", "Moves to the next backend of a chain (alias fallback, "
                                         "node failover) before the first byte", ("kind",)),
    "isthmus_store_call_duration_seconds": ("histogram", "DynamoDB calls, by operation", ("operation",)),
    # node agent
    "isthmus_agent_queue_depth": ("gauge", "Generations waiting for a batch slot", ()),
    "isthmus_agent_active_generations": ("gauge", "Generations in a batch slot", ()),
    "isthmus_agent_decode_tokens_per_second": ("gauge", "Decode rate of the last finished generation", ("model",)),
    "isthmus_agent_generated_tokens_total": ("counter", "Tokens generated", ("model",)),
    "isthmus_agent_prefix_cache_hit_tokens_total": ("counter", "Prompt tokens reused from the prefix cache",
                                                    ("model",)),
    "isthmus_agent_loaded_models": ("gauge", "Models loaded in this agent", ()),
}
# Latency buckets from a cached-key control call (~1 ms) to a long generation (minutes).
_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _Prometheus:
    def __init__(self) -> None:
        # cold start: prometheus-client only in a long-running process, on the first metric
        import prometheus_client

        self.client = prometheus_client
        self.registry = prometheus_client.CollectorRegistry(auto_describe=True)
        self.families: dict[str, Any] = {}
        for name, (kind, doc, labels) in FAMILIES.items():
            if kind == "counter":
                self.families[name] = prometheus_client.Counter(name.removesuffix("_total"), doc, labels,
                                                                registry=self.registry)
            elif kind == "gauge":
                self.families[name] = prometheus_client.Gauge(name, doc, labels, registry=self.registry)
            else:
                buckets = _STORE_BUCKETS if name.startswith("isthmus_store") else _DURATION_BUCKETS
                self.families[name] = prometheus_client.Histogram(name, doc, labels, buckets=buckets,
                                                                  registry=self.registry)
        self._children: dict[tuple[str, tuple[str, ...]], Any] = {}

    def _child(self, name: str, labels: tuple[str, ...]) -> Any:
        key = (name, labels)
        child = self._children.get(key)
        if child is None:
            family = self.families[name]
            child = family.labels(*labels) if labels else family
            if len(self._children) < 50_000:  # bounded: models and routes are few, but never trust a label
                self._children[key] = child
        return child

    def add(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, labels).inc(value)

    def observe(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, labels).observe(value)

    def set(self, name: str, labels: tuple[str, ...], value: float) -> None:
        self._child(name, labels).set(value)

    def render(self) -> tuple[bytes, str]:
        return self.client.generate_latest(self.registry), self.client.CONTENT_TYPE_LATEST


class _Emf:
    """One EMF line per metric, with its labels as dimensions (Powertools' ``single_metric``): CloudWatch reads
    the line from the function's log, so nothing is sent from the request path."""

    def __init__(self) -> None:
        from aws_lambda_powertools.metrics import MetricUnit, single_metric

        self.single_metric = single_metric
        self.units = {"counter": MetricUnit.Count, "gauge": MetricUnit.Count, "histogram": MetricUnit.Seconds}
        self.namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)

    def _emit(self, name: str, labels: tuple[str, ...], value: float) -> None:
        kind, _, label_names = FAMILIES[name]
        with self.single_metric(name=name, unit=self.units[kind], value=value, namespace=self.namespace) as metric:
            for label, label_value in zip(label_names, labels, strict=True):
                metric.add_dimension(name=label, value=label_value or "-")

    add = observe = set = _emit

    def render(self) -> tuple[bytes, str]:
        return b"", "text/plain"


class _Off:
    def add(self, name: str, labels: tuple[str, ...], value: float) -> None:
        return None

    observe = set = add

    def render(self) -> tuple[bytes, str]:
        return b"", "text/plain"


_sink: list[Any] = []


def _get() -> Any:
    if not _sink:
        choice = os.environ.get("ISTHMUS_METRICS", "").lower()
        if not choice:
            choice = "emf" if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else "prometheus"
        _sink.append(_Emf() if choice == "emf" else _Off() if choice == "off" else _Prometheus())
    return _sink[0]


def reset() -> None:
    """Choose the sink again on the next call (tests switch ``ISTHMUS_METRICS``)."""
    _sink.clear()


def render() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process, and its content type."""
    rendered: tuple[bytes, str] = _get().render()
    return rendered


# ------------------------------------------------------------------ HTTP requests (every function)
class RequestLabels:
    """What a request learns about itself on the way (the model it was routed to, the backend), for its line."""

    __slots__ = ("backend", "model")

    def __init__(self) -> None:
        self.model = ""
        self.backend = ""


_current: contextvars.ContextVar[RequestLabels | None] = contextvars.ContextVar("isthmus_metric_labels", default=None)


def request_started() -> tuple[RequestLabels, float]:
    labels = RequestLabels()
    _current.set(labels)
    return labels, time.perf_counter()


def routed(model: str, backend: str) -> None:
    """The inference service names the request's model and backend (a no-op outside a request)."""
    labels = _current.get()
    if labels is not None:
        labels.model, labels.backend = model, backend


def request_done(started: tuple[RequestLabels, float], route: str, status: int) -> None:
    labels, t0 = started
    key = (route, labels.model, labels.backend, str(status))
    sink = _get()
    sink.add("isthmus_requests_total", key, 1)
    sink.observe("isthmus_request_duration_seconds", key, time.perf_counter() - t0)


# ------------------------------------------------------------------ money and limits
def tokens(model: str, backend: str, prompt: int, completion: int, cached: int) -> None:
    sink = _get()
    sink.add("isthmus_tokens_total", (model, backend, "in"), prompt)
    sink.add("isthmus_tokens_total", (model, backend, "out"), completion)
    if cached:
        sink.add("isthmus_tokens_total", (model, backend, "cached"), cached)


def spend(model: str, usd: Decimal) -> None:
    if usd:
        _get().add("isthmus_spend_usd_total", (model,), float(usd))


def budget_refused(model: str) -> None:
    _get().add("isthmus_budget_refusals_total", (model,), 1)


def rate_limited(kind: str) -> None:
    _get().add("isthmus_rate_limit_refusals_total", (kind,), 1)


def upstream_retry(provider: str) -> None:
    _get().add("isthmus_upstream_retries_total", (provider,), 1)


def upstream_fallback(kind: str) -> None:
    _get().add("isthmus_upstream_fallbacks_total", (kind,), 1)


# ------------------------------------------------------------------ the store
def watch_store_client(client: Any) -> Any:
    """Times every call of a botocore client (its own before/after events, so no call site changes)."""
    events = client.meta.events
    events.register("before-call", _store_call_began)
    events.register("after-call", _store_call_ended)
    return client


def _store_call_began(context: dict[str, Any], **_: Any) -> None:
    context["isthmus_t0"] = time.perf_counter()


def _store_call_ended(model: Any, context: dict[str, Any], **_: Any) -> None:
    t0 = context.get("isthmus_t0")
    if t0 is not None:
        store_call_observed(model.name, time.perf_counter() - t0)


def store_call_observed(operation: str, seconds: float) -> None:
    """One store call (its attempts included) took ``seconds``."""
    _get().observe("isthmus_store_call_duration_seconds", (operation,), seconds)


# ------------------------------------------------------------------ node agent
def agent_load(queued: int, active: int, loaded_models: int) -> None:
    sink = _get()
    sink.set("isthmus_agent_queue_depth", (), queued)
    sink.set("isthmus_agent_active_generations", (), active)
    sink.set("isthmus_agent_loaded_models", (), loaded_models)


def agent_generation(model: str, generated: int, decode_seconds: float, cached_prompt_tokens: int) -> None:
    sink = _get()
    sink.add("isthmus_agent_generated_tokens_total", (model,), generated)
    if cached_prompt_tokens:
        sink.add("isthmus_agent_prefix_cache_hit_tokens_total", (model,), cached_prompt_tokens)
    if generated > 1 and decode_seconds > 0:
        sink.set("isthmus_agent_decode_tokens_per_second", (model,), (generated - 1) / decode_seconds)

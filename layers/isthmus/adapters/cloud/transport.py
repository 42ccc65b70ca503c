"""HTTP to cloud providers: one pooled httpx client per provider (and event loop), HTTP/2 when ``h2`` is
installed; timeouts for connect, first byte and idle gaps between stream chunks; retries with jittered
backoff on 429 / 5xx / connection errors *before the first byte only* (honouring ``Retry-After``); and the
upstream's errors mapped to what the gateway's caller should see. httpx is imported on first use."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from isthmus import metrics
from isthmus.adapters.cloud.sse_wire import EventTooLarge, SseParser
from isthmus.background import per_loop
from isthmus.errors import ApiError
from isthmus.observability import get_logger
from isthmus.ports.providers import ProviderTarget

if TYPE_CHECKING:
    # cold start: httpx on the first cloud call (module docstring)
    import httpx

    from isthmus_contracts.agent import TokenizeRequest
    from isthmus_contracts.internal import InternalRequest, InternalResponse

logger = get_logger("cloud")
MAX_RETRY_DELAY_S = 30.0
BACKOFF_BASE_S = 0.25
_clients: dict[asyncio.AbstractEventLoop, dict[tuple[str, str], httpx.AsyncClient]] = {}
sleep = asyncio.sleep  # tests swap this to record the delays instead of waiting them out


def client(target: ProviderTarget) -> httpx.AsyncClient:
    """The provider's pooled client on the running loop (see isthmus.background.per_loop)."""
    # cold start: httpx on the first cloud call (module docstring)
    import httpx

    clients = per_loop(_clients, dict)
    key = (target.provider_id, target.api_base)
    found = clients.get(key)
    if found is None or found.is_closed:
        if importlib.util.find_spec("h2") is not None:  # HTTP/2 to the providers that offer it: httpx's own
            found = httpx.AsyncClient(http2=True, limits=httpx.Limits(max_connections=200,
                                                                      max_keepalive_connections=50))
        elif importlib.util.find_spec("httptools") is not None:  # HTTP/1.1: a fraction of httpx's own cost per call
            from isthmus.adapters.cloud.lean_http import LeanTransport

            found = httpx.AsyncClient(transport=LeanTransport(max_connections=200, max_keepalive_connections=50))
        else:
            found = httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        clients[key] = found
    return found


def upstream_message(raw: bytes) -> str:
    """The upstream's error message (OpenAI or Anthropic shape), trimmed."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace").strip()[:300]
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    if message is None and isinstance(data, dict):
        message = data.get("message") or data.get("detail")
    return str(message or "")[:500].strip()


def retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def map_status(target: ProviderTarget, status: int, raw: bytes, headers: Any = None) -> ApiError:
    message = upstream_message(raw)
    who = f"provider '{target.provider_id}'"
    if status in (400, 422):
        return ApiError(400, message or f"{who} rejected the request", code="upstream_invalid_request")
    if status in (401, 403):
        return ApiError(502, f"{who} refused the gateway's credentials ({status})", code="upstream_auth_failed")
    if status == 404:
        return ApiError(404, message or f"{who} does not know model '{target.upstream_model}'",
                        code="model_not_found", param="model")
    if status == 429:
        after = retry_after(headers)
        return ApiError(429, message or f"{who} is rate limiting", code="upstream_rate_limited",
                        headers={"Retry-After": str(int(after + 0.999))} if after is not None else {})
    return ApiError(502, f"{who} answered {status}" + (f": {message}" if message else ""), code="upstream_error")


def timeout_error(target: ProviderTarget, what: str) -> ApiError:
    return ApiError(504, f"provider '{target.provider_id}' timed out ({what})", code="upstream_timeout")


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def backoff(attempt: int) -> float:
    return min(MAX_RETRY_DELAY_S, BACKOFF_BASE_S * (2 ** attempt) * random.uniform(0.5, 1.5))


async def _post(target: ProviderTarget, url: str, body: Any, content: bytes | None, headers: dict[str, str],
                timeout: httpx.Timeout) -> httpx.Response:
    """One POST, answered once its head arrived: straight to the lean transport when the client would send it
    there as it is (see lean_http.direct), else through the client."""
    from isthmus.adapters.cloud import lean_http

    pooled = client(target)
    direct = lean_http.direct(pooled, url)
    if direct is not None:
        return await direct.post(pooled, url, body, content, headers, timeout)
    request = pooled.build_request("POST", url, json=body if content is None else None, content=content,
                                   headers=headers, timeout=timeout)
    return await pooled.send(request, stream=True)


async def send(target: ProviderTarget, path: str, body: Any, headers: dict[str, str], *,
               content: bytes | None = None, whole: bool = False) -> httpx.Response:
    """POST ``{api_base}{path}``; returns once the status line and headers of a 2xx answer arrived (the body
    not yet read). Retries before that; raises :class:`ApiError` (mapped) when out of attempts. ``whole``:
    a non-streamed answer, whose first byte may wait for the whole generation (``whole_timeout``)."""
    first_byte = target.whole_timeout if whole else target.first_byte_timeout
    # cold start: httpx on the first cloud call (module docstring)
    import httpx

    timeout = httpx.Timeout(connect=target.connect_timeout, read=target.idle_timeout, write=30.0, pool=10.0)
    url = target.api_base.rstrip("/") + path
    attempt = 0
    while True:
        wait: float | None = None
        try:
            async with asyncio.timeout(first_byte):  # (asyncio.wait_for would run the call in a task of its own)
                resp = await _post(target, url, body, content, {**target.headers, **headers}, timeout)
        except TimeoutError:
            raise timeout_error(target, "no first byte") from None
        except httpx.TimeoutException as exc:
            if not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
                raise timeout_error(target, type(exc).__name__) from None
            error = ApiError(502, f"provider '{target.provider_id}' unreachable ({type(exc).__name__})",
                             code="upstream_unavailable")
        except httpx.TransportError as exc:
            error = ApiError(502, f"provider '{target.provider_id}' unreachable ({type(exc).__name__})",
                             code="upstream_unavailable")
        else:
            if resp.status_code < 400:
                return resp
            try:
                raw = await resp.aread()
            except httpx.HTTPError:
                raw = b""
            finally:
                await resp.aclose()
            error = map_status(target, resp.status_code, raw, resp.headers)
            if not _retryable(resp.status_code):
                raise error
            wait = retry_after(resp.headers)
        if attempt >= target.max_retries:
            raise error
        delay = min(MAX_RETRY_DELAY_S, wait) if wait is not None else backoff(attempt)
        attempt += 1
        metrics.upstream_retry(target.provider_id)
        logger.info("retrying provider call", extra={"provider": target.provider_id, "attempt": attempt,
                                                     "status": error.status, "delay_s": round(delay, 3)})
        await sleep(delay)


@contextlib.contextmanager
def _mid_answer(target: ProviderTarget, *, idle: str, broke: str) -> Iterator[None]:
    """Transport failures once the answer has begun (no retry): idle -> 504, broken -> 502."""
    # cold start: httpx on the first cloud call (module docstring)
    import httpx

    try:
        yield
    except httpx.TimeoutException:
        raise timeout_error(target, idle) from None
    except httpx.TransportError as exc:
        raise ApiError(502, f"provider '{target.provider_id}' {broke} ({type(exc).__name__})",
                       code="upstream_error") from None


async def read_json(target: ProviderTarget, resp: httpx.Response) -> Any:
    """The whole body of an answer whose headers arrived (after the first byte: no retry)."""
    try:
        with _mid_answer(target, idle="idle", broke="broke off"):
            raw = await resp.aread()
    finally:
        await resp.aclose()
    try:
        return json.loads(raw)
    except ValueError:
        raise ApiError(502, f"provider '{target.provider_id}' sent unreadable JSON", code="upstream_error") from None


# After a stream's last event, the rest of the body (the chunked encoding's end) is read before the connection
# goes back to the pool: closing a response not read to its end drops the connection, and the next call pays a
# new TCP connect (measured: ~1 ms and a task group per stream). Bounded, for an upstream that keeps talking.
DRAIN_TIMEOUT_S = 0.5
DRAIN_MAX_BYTES = 65536


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Reads what is left of a body being read as ``chunks`` (bounded), so that closing it keeps the connection."""
    read = 0
    with contextlib.suppress(Exception):
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            async for chunk in chunks:
                read += len(chunk)
                if read > DRAIN_MAX_BYTES:
                    return


async def sse(target: ProviderTarget, resp: httpx.Response,
              last: Callable[[str | None, str], bool] | None = None) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) per server-sent event; a broken or idle stream raises ApiError (502 / 504). ``last``
    tells the protocol's final event: once it has come, the body's end is read before it is yielded (a stream
    read to its end keeps its pooled connection)."""
    parser = SseParser()
    try:
        with _mid_answer(target, idle="idle between chunks", broke="stream broke"):
            chunks = resp.aiter_bytes()
            async for chunk in chunks:
                for event, data in parser.feed(chunk):
                    if last is not None and last(event, data):
                        await _drain(chunks)
                        yield event, data
                        return
                    yield event, data
            for event, data in parser.end():
                yield event, data
    except EventTooLarge as exc:
        raise ApiError(502, f"provider '{target.provider_id}' sent {exc}", code="upstream_error") from None
    finally:
        await resp.aclose()


class ProviderBackend:
    """What every protocol's backend does alike: the body posted at ``PATH`` with the protocol's headers, a whole
    answer read as JSON, a stream read as SSE. A protocol module subclasses it with its wire mapping
    (``_headers``, its module's ``to_body`` and ``to_response``) and its own ``stream`` over :meth:`_events`."""

    PATH = ""

    def __init__(self, target: ProviderTarget) -> None:
        self.target = target
        self.name = f"cloud:{target.provider_id}"

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    @staticmethod
    def is_last_event(event: str | None, data: str) -> bool:
        """The protocol's final SSE event (after it, the body's end is read: see ``sse``); None known here."""
        return False

    @staticmethod
    def to_body(request: InternalRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def to_response(data: Any, model: str) -> InternalResponse:
        raise NotImplementedError

    def _body(self, request: InternalRequest, *, stream: bool) -> dict[str, Any]:
        return self.to_body(request, self.target.upstream_model, stream=stream)

    async def generate(self, request: InternalRequest) -> InternalResponse:
        resp = await send(self.target, self.PATH, self._body(request, stream=False), self._headers(), whole=True)
        return self.to_response(await read_json(self.target, resp), request.model)

    async def _events(self, request: InternalRequest) -> AsyncIterator[tuple[str | None, str]]:
        """The upstream's SSE events (name, data) for a streamed ``request``, once its headers came."""
        resp = await send(self.target, self.PATH, self._body(request, stream=True), self._headers())
        return sse(self.target, resp, self.is_last_event)

    def _ended_early(self) -> ApiError:
        return ApiError(502, f"provider '{self.target.provider_id}' ended the stream early", code="upstream_error")

    async def count_tokens(self, request: TokenizeRequest) -> int | None:
        return None  # no cloud protocol here counts tokens ahead of a call

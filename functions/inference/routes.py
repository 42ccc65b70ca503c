"""Inference: /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/responses, and the raw
OpenAI passthrough of cloud aliases (/v1/embeddings, /v1/moderations, /v1/images/generations, /v1/audio/speech).

Thin: parse the dialect into the internal request, call the inference service, render the dialect (SSE
streams are relayed through the coalescer and stop the backend when the client goes away).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from isthmus import wiring
from isthmus.dialects import anthropic_messages, count_tokens, openai_chat, openai_responses
from isthmus.dialects.common import SSE_DONE, sse_data, sse_event
from isthmus.dialects.openai_responses_stream import ResponsesStreamEncoder
from isthmus.errors import ApiError, Dialect
from isthmus.fields import MAX_NAME_CHARS
from isthmus.observability import get_logger, lambda_entry
from isthmus.ports.responses import ResponseStore, StoredResponse
from isthmus.services.accumulate import StreamAccumulator
from isthmus.services.inference import Call, ClientGone, InferenceService
from isthmus.streaming import RelayResponse, relay_frames, sse_response
from isthmus.web import Endpoint, create_app, json_response, read_json, versioned
from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import InternalRequest, InternalResponse

SERVICE = "inference"
PING_INTERVAL_S = 10.0
logger = get_logger(SERVICE)

def service() -> InferenceService:
    return wiring.inference_service()


def store() -> ResponseStore:
    return wiring.response_store()


def _session(request: Request) -> str | None:
    session = request.headers.get("x-session-id") or None
    if session is not None and len(session) > MAX_NAME_CHARS:
        raise ApiError(400, f"X-Session-Id is longer than {MAX_NAME_CHARS} characters.", param="X-Session-Id",
                       code="invalid_session_id")
    return session


def _request_id(request: Request) -> str:
    return str(request.state.request_id) if hasattr(request.state, "request_id") else ""


def gated(endpoint: str) -> Callable[[Endpoint], Endpoint]:
    """Authenticate first; a request turned away before admission still gets its usage row."""

    def wrap(fn: Endpoint) -> Endpoint:
        async def inner(request: Request) -> Response:
            principal = None
            try:
                principal = await service().authenticate(request.headers)
                request.state.principal = principal
                return await fn(request)
            except ClientGone:  # settled as cancelled; nobody is left to read this
                return Response(status_code=499)
            except ApiError as exc:
                if getattr(request.state, "call", None) is None:
                    await service().refuse(principal, model=getattr(request.state, "model", ""), endpoint=endpoint,
                                           error=exc, request_id=_request_id(request))
                raise

        return inner

    return wrap


async def _begin(request: Request, internal: InternalRequest, endpoint: str) -> Call:
    request.state.model = internal.model
    call = await service().begin(request.state.principal, internal, endpoint=endpoint,
                                 request_id=_request_id(request), detach_settle="aws.event" not in request.scope,
                                 axis_header=request.headers.get("x-coeos-axis"))
    request.state.call = call
    return call


def _client_gone(request: Request) -> Callable[[], Awaitable[None]]:
    """Returns once the client has hung up. Starlette does not cancel a handler whose client went away, so a
    non-streamed answer would be generated (and billed) to the end for nobody: the service watches this."""

    async def gone() -> None:
        # The body has been read whole, so the next message is the disconnect (Mangum sends it only after the
        # response: under Lambda this waits until it is cancelled).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


async def _complete(request: Request, call: Call) -> tuple[InternalResponse, BackgroundTask]:
    """The whole answer, and the task that settles it once the response is sent. Raises ClientGone (answered
    499 by the caller) when the client hangs up first."""
    resp = await service().complete(call, client_gone=_client_gone(request))
    return resp, BackgroundTask(service().settle, call, resp.usage, status="success", status_code=200)


def _headers(call: Call) -> dict[str, str]:
    return dict(call.admission.headers) if call.admission else {}


def _sse(frames: AsyncIterator[str], call: Call) -> RelayResponse:
    return sse_response(frames, headers=_headers(call))


# ---- OpenAI chat completions ----------------------------------------------------------------------------

@gated("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    req = openai_chat.parse(await read_json(request))
    internal = openai_chat.to_internal(req, header_session_id=_session(request))
    call = await _begin(request, internal, "/v1/chat/completions")
    if not internal.stream:
        resp, settle = await _complete(request, call)
        return JSONResponse(openai_chat.to_chat_completion(resp), headers=_headers(call), background=settle)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    encoder = openai_chat.ChatStreamEncoder(include_usage=include_usage, model=call.request.model)
    events = await service().open_stream(call)
    return _sse(relay_frames(events, encoder.feed, encoder.close, sse_data, Dialect.OPENAI, done=SSE_DONE), call)


# ---- Anthropic messages -----------------------------------------------------------------------------------

@gated("/v1/messages")
async def messages(request: Request) -> Response:
    req = anthropic_messages.parse(await read_json(request))
    internal = anthropic_messages.to_internal(req, header_session_id=_session(request))
    call = await _begin(request, internal, "/v1/messages")
    if not internal.stream:
        resp, settle = await _complete(request, call)
        return JSONResponse(anthropic_messages.to_message(resp), headers=_headers(call), background=settle)
    encoder = anthropic_messages.MessagesStreamEncoder(model=call.request.model)
    events = await service().open_stream(call)
    return _sse(relay_frames(events, encoder.feed, encoder.close, sse_event, Dialect.ANTHROPIC,
                             ping=sse_event(anthropic_messages.ping_event()), ping_interval=PING_INTERVAL_S), call)


async def messages_count_tokens(request: Request) -> Response:
    # No budget hold and no usage row: counting is free. It still needs a valid key in keyed mode.
    await service().authenticate(request.headers)
    req = count_tokens.parse(await read_json(request))
    msgs, tools = count_tokens.to_internal(req)
    exact = None
    try:
        exact = await service().count_tokens(req.model, TokenizeRequest(messages=msgs, tools=tools))
    except ApiError as exc:
        if exc.status == 404:
            raise
        # A backend that cannot tokenize (or is busy) still gets an answer: the estimate.
    return json_response(count_tokens.response(exact if exact is not None else count_tokens.estimate(req)))


# ---- OpenAI Responses ---------------------------------------------------------------------------------------

@gated("/v1/responses")
async def responses_create(request: Request) -> Response:
    req = openai_responses.parse(await read_json(request))
    internal = openai_responses.to_internal(req, header_session_id=_session(request))
    if req.previous_response_id:
        previous = await store().get(req.previous_response_id)
        if previous is None:
            raise ApiError(404, f"Previous response '{req.previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        internal = openai_responses.prepend_previous(internal, previous.messages, previous.output)
    call = await _begin(request, internal, "/v1/responses")
    history = [m for m in call.request.messages if m.role != "system"]
    keep = req.store is not False

    async def remember(output: Any, response_id: str) -> None:
        if keep:
            await store().put(StoredResponse(response_id=response_id, model=call.request.model,
                                             messages=history, output=output, created_at=output.created))

    if not internal.stream:
        resp, settle = await _complete(request, call)
        body = openai_responses.to_response(resp, req)
        await remember(resp, body["id"])
        return JSONResponse(body, headers=_headers(call), background=settle)
    encoder = ResponsesStreamEncoder(req, model=call.request.model)
    acc = StreamAccumulator(call.request.model)
    events = await service().open_stream(call)

    async def frames() -> AsyncIterator[str]:
        async for frame in relay_frames(events, encoder.feed, encoder.close, sse_event, Dialect.OPENAI,
                                  on_event=acc.feed):
            yield frame
        if acc.finished and acc.error is None:
            await remember(acc.response, encoder.id)

    return _sse(frames(), call)


async def responses_get(request: Request) -> Response:
    await service().authenticate(request.headers)
    stored = await store().get(request.path_params["response_id"])
    if stored is None:
        raise ApiError(404, f"Response '{request.path_params['response_id']}' not found.", code="not_found")
    req = openai_responses.parse({"model": stored.model, "input": "-"})
    body = openai_responses.to_response(stored.output, req)
    body["id"] = stored.response_id
    return json_response(body)


async def responses_delete(request: Request) -> Response:
    await service().authenticate(request.headers)
    response_id = request.path_params["response_id"]
    if not await store().delete(response_id):
        raise ApiError(404, f"Response '{response_id}' not found.", code="not_found")
    return json_response({"id": response_id, "object": "response", "deleted": True})


# ---- raw OpenAI passthrough (OpenAI-protocol providers only) --------------------------------------------

def passthrough(path: str) -> Endpoint:
    """Forward the body as-is to the alias's provider with the model rewritten; the answer comes back as-is."""

    @gated(f"/v1{path}")
    async def endpoint(request: Request) -> Response:
        body = await read_json(request)
        request.state.model = body.get("model", "") if isinstance(body, dict) else ""
        out = await wiring.passthrough_service().forward(request.state.principal, path, body, endpoint=f"/v1{path}",
                                      request_id=_request_id(request),
                                      on_admitted=lambda: setattr(request.state, "call", "passthrough"))
        return Response(out.content, status_code=out.status, headers=out.headers)

    return endpoint


app = create_app(
    [
        *versioned("/embeddings", passthrough("/embeddings"), ["POST"]),
        *versioned("/moderations", passthrough("/moderations"), ["POST"]),
        *versioned("/images/generations", passthrough("/images/generations"), ["POST"]),
        *versioned("/audio/speech", passthrough("/audio/speech"), ["POST"]),
        *versioned("/chat/completions", chat_completions, ["POST"]),
        *versioned("/messages", messages, ["POST"]),
        *versioned("/messages/count_tokens", messages_count_tokens, ["POST"]),
        *versioned("/responses", responses_create, ["POST"]),
        *versioned("/responses/{response_id}", responses_get, ["GET"]),
        *versioned("/responses/{response_id}", responses_delete, ["DELETE"]),
    ],
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE)

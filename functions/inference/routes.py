"""Inference: /v1/chat/completions, /v1/messages, /v1/messages/count_tokens, /v1/responses, and the raw
OpenAI passthrough of cloud aliases (/v1/embeddings, /v1/moderations, /v1/images/generations, /v1/audio/speech,
/v1/rerank, /v1/audio/transcriptions).

Thin: parse the dialect into the internal request, call the inference service, render the dialect (SSE
streams are relayed through the coalescer and stop the backend when the client goes away).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from isthmus import wiring
from isthmus.dialects import anthropic_messages, count_tokens, openai_chat, openai_responses
from isthmus.dialects.common import SSE_DONE, sse_data, sse_event
from isthmus.dialects.openai_responses_stream import ResponsesStreamEncoder
from isthmus.errors import ApiError, Dialect
from isthmus.fields import MAX_NAME_CHARS
from isthmus.handlers import ApiKey, authorized, request_id
from isthmus.observability import get_logger, lambda_entry
from isthmus.ports.responses import ResponseStore
from isthmus.services.inference.accumulate import StreamAccumulator
from isthmus.services.inference.form_model import form_model
from isthmus.services.inference.inference import Call, ClientGone, InferenceService
from isthmus.services.inference.responses import ResponsesService
from isthmus.streaming import RelayResponse, relay_frames, sse_response
from isthmus.web import Endpoint, create_app, json_response, read_body, read_json, versioned, versioned_all
from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent

if TYPE_CHECKING:
    from isthmus.services.inference.passthrough import PassthroughService

SERVICE = "inference"
PING_INTERVAL_S = 10.0
PING_FRAME = sse_event(anthropic_messages.ping_event())  # a messages stream's keepalive (Anthropic's own)
logger = get_logger(SERVICE)

def service() -> InferenceService:
    return wiring.inference_service()


def store() -> ResponseStore:
    return wiring.response_store()


def responses() -> ResponsesService:
    return ResponsesService(store())


def passthrough_service() -> PassthroughService:
    return wiring.passthrough_service()


def api_key(endpoint: str | None = None) -> ApiKey:
    """``@authorized(api_key(endpoint))``: a billed route (refusals get their usage row); no endpoint: free."""
    return ApiKey(service, endpoint=endpoint, hung_up=ClientGone)


def _session(request: Request) -> str | None:
    session = request.headers.get("x-session-id") or None
    if session is not None and len(session) > MAX_NAME_CHARS:
        raise ApiError(400, f"X-Session-Id is longer than {MAX_NAME_CHARS} characters.", param="X-Session-Id",
                       code="invalid_session_id")
    return session


async def _begin(request: Request, internal: InternalRequest, endpoint: str) -> Call:
    request.state.model = internal.model
    call = await service().begin(request.state.principal, internal, endpoint=endpoint,
                                 request_id=request_id(request), detach_settle="aws.event" not in request.scope,
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


def _sse(frames: AsyncIterator[str], call: Call, ping: str | None = None) -> RelayResponse:
    return sse_response(frames, headers=_headers(call), ping=ping, ping_interval=PING_INTERVAL_S)


async def _answer(request: Request, internal: InternalRequest, endpoint: str,
                  whole: Callable[[InternalResponse], dict[str, Any]],
                  frames: Callable[[Call, AsyncIterator[StreamEvent]], AsyncIterator[str]],
                  ping: str | None = None) -> Response:
    """Admit ``internal``, then the whole answer rendered by ``whole``, or the stream relayed as ``frames`` (with
    ``ping`` frames in its silences)."""
    call = await _begin(request, internal, endpoint)
    if not internal.stream:
        resp, settle = await _complete(request, call)
        return JSONResponse(whole(resp), headers=_headers(call), background=settle)
    return _sse(frames(call, await service().open_stream(call)), call, ping)


# ---- OpenAI chat completions ----------------------------------------------------------------------------

@authorized(api_key("/v1/chat/completions"))
async def chat_completions(request: Request) -> Response:
    req = openai_chat.parse(await read_json(request))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def frames(call: Call, events: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
        encoder = openai_chat.ChatStreamEncoder(include_usage=include_usage, model=call.request.model)
        return relay_frames(events, encoder.feed, encoder.close, sse_data, Dialect.OPENAI, done=SSE_DONE)

    internal = openai_chat.to_internal(req, header_session_id=_session(request))
    return await _answer(request, internal, "/v1/chat/completions", openai_chat.to_chat_completion, frames)


# ---- Anthropic messages -----------------------------------------------------------------------------------

@authorized(api_key("/v1/messages"))
async def messages(request: Request) -> Response:
    req = anthropic_messages.parse(await read_json(request))

    def frames(call: Call, events: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
        encoder = anthropic_messages.MessagesStreamEncoder(model=call.request.model)
        return relay_frames(events, encoder.feed, encoder.close, sse_event, Dialect.ANTHROPIC)

    internal = anthropic_messages.to_internal(req, header_session_id=_session(request))
    return await _answer(request, internal, "/v1/messages", anthropic_messages.to_message, frames,
                         ping=PING_FRAME)


@authorized(api_key())  # no budget hold and no usage row: counting is free, but keyed mode needs a valid key
async def messages_count_tokens(request: Request) -> Response:
    req = count_tokens.parse(await read_json(request))
    msgs, tools = count_tokens.to_internal(req)
    exact = None
    try:
        exact = await service().count_tokens(req.model, TokenizeRequest(messages=msgs, tools=tools),
                                             request.state.principal)
    except ApiError as exc:
        if exc.status == 404:
            raise
        # A backend that cannot tokenize (or is busy) still gets an answer: the estimate.
    return json_response(count_tokens.response(exact if exact is not None else count_tokens.estimate(req)))


# ---- OpenAI Responses ---------------------------------------------------------------------------------------

@authorized(api_key("/v1/responses"))
async def responses_create(request: Request) -> Response:
    req = openai_responses.parse(await read_json(request))
    internal = openai_responses.to_internal(req, header_session_id=_session(request))
    internal = await responses().continue_from(internal, req.previous_response_id, openai_responses.prepend_previous)
    call = await _begin(request, internal, "/v1/responses")
    memory = responses().memory(call.request, keep=req.store is not False)
    if not internal.stream:
        resp, settle = await _complete(request, call)
        body = openai_responses.to_response(resp, req)
        await memory.remember(resp, body["id"])
        return JSONResponse(body, headers=_headers(call), background=settle)
    encoder = ResponsesStreamEncoder(req, model=call.request.model)
    folded = StreamAccumulator(call.request.model)
    events = await service().open_stream(call)
    frames = relay_frames(events, encoder.feed, encoder.close, sse_event, Dialect.OPENAI, on_event=folded.feed)
    return _sse(memory.after_stream(frames, folded, lambda: encoder.id), call)


@authorized(api_key())
async def responses_get(request: Request) -> Response:
    stored = await responses().get(request.path_params["response_id"])
    body = openai_responses.to_response(stored.output, openai_responses.parse({"model": stored.model, "input": "-"}))
    return json_response({**body, "id": stored.response_id})


@authorized(api_key())
async def responses_delete(request: Request) -> Response:
    await responses().delete(request.path_params["response_id"])
    return json_response({"id": request.path_params["response_id"], "object": "response", "deleted": True})


# ---- raw OpenAI passthrough (OpenAI-protocol providers only) --------------------------------------------

def passthrough(path: str, capability: str | None = None) -> Endpoint:
    """Forward the body as-is to the alias's provider with the model rewritten; the answer comes back as-is."""

    @authorized(api_key(f"/v1{path}"))
    async def endpoint(request: Request) -> Response:
        body = await read_json(request)
        request.state.model = body.get("model", "") if isinstance(body, dict) else ""
        out = await passthrough_service().forward(
            request.state.principal, path, body, endpoint=f"/v1{path}", request_id=request_id(request),
            on_admitted=lambda: setattr(request.state, "call", "passthrough"), capability=capability,
            detach_settle="aws.event" not in request.scope)
        return Response(out.content, status_code=out.status, headers=out.headers)

    return endpoint


def form_passthrough(path: str, capability: str) -> Endpoint:
    """A multipart/form-data call forwarded as it came (only its ``model`` part rewritten)."""

    @authorized(api_key(f"/v1{path}"))
    async def endpoint(request: Request) -> Response:
        raw, content_type = await read_body(request), request.headers.get("content-type", "")
        request.state.model = form_model(raw, content_type)
        out = await passthrough_service().forward_form(
            request.state.principal, path, raw, content_type, endpoint=f"/v1{path}",
            request_id=request_id(request), on_admitted=lambda: setattr(request.state, "call", "passthrough"),
            capability=capability, detach_settle="aws.event" not in request.scope)
        return Response(out.content, status_code=out.status, headers=out.headers)

    return endpoint


app = create_app(
    [
        # Starlette tries routes in order, a regex each: the busiest first (the paths are exact, none shadows another)
        *versioned_all([("/chat/completions", chat_completions, ["POST"]), ("/messages", messages, ["POST"]),
                        ("/responses", responses_create, ["POST"]),
                        ("/embeddings", passthrough("/embeddings"), ["POST"])]),
        *versioned("/moderations", passthrough("/moderations"), ["POST"]),
        *versioned("/images/generations", passthrough("/images/generations"), ["POST"]),
        *versioned("/audio/speech", passthrough("/audio/speech"), ["POST"]),
        *versioned("/rerank", passthrough("/rerank", "rerank"), ["POST"]),
        *versioned("/audio/transcriptions", form_passthrough("/audio/transcriptions", "transcription"), ["POST"]),
        *versioned("/messages/count_tokens", messages_count_tokens, ["POST"]),
        *versioned("/responses/{response_id}", responses_get, ["GET"]),
        *versioned("/responses/{response_id}", responses_delete, ["DELETE"]),
    ],
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=passthrough_service)  # (which builds the inference service too)

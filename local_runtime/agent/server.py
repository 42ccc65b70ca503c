"""The agent's HTTP surface (``/agent/v1/*``, ``/health``): Starlette, pydantic at the boundary.

Handlers never touch mlx: prompts are rendered on a worker thread (tokenizers are thread-safe), and
generation goes through :class:`Engine`, whose thread owns every mlx array.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import platform
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from isthmus import metrics, settings
from isthmus.errors import ApiError, Dialect
from isthmus.web import create_app, parse_body, read_json
from isthmus_contracts.agent import AgentHealth, AgentStatus, LoadRequest, ShardSpec, TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import ErrorEvent, InternalRequest
from local_runtime.agent.embeddings.route import embeddings as embed_answer
from local_runtime.agent.engine import AgentRestarting, Engine, QueueFull
from local_runtime.agent.jobs import DEFAULT_MAX_TOKENS, Job
from local_runtime.agent.load_progress import LoadProgress
from local_runtime.agent.models import registry
from local_runtime.agent.prompt import build_prompt
from local_runtime.agent.responses import collect

RETRY_AFTER_S = "1"
LOADING_RETRY_AFTER_S = "5"
KEEPALIVE_S = 2.0  # a blank NDJSON line while a stream has nothing to say (the gateway's idle bound is 20 s)
DEFAULT_MAX_PARTS = 4096  # messages + content blocks + tools in one prompt
DEFAULT_MAX_CHARS_PER_TOKEN = 32
LARGE_BODY_BYTES = 1024 * 1024
LARGE_PROMPT_TOKENS = 2048  # after a prompt this long, freed memory is handed back to the OS


class AgentState:
    def __init__(self, engine: Engine, node_id: str, data_dir: str | None = None) -> None:
        self.engine = engine
        self.node_id = node_id
        self.data_dir = data_dir
        self.loading: str | None = None  # the model being loaded (requests get 503 model_loading meanwhile)
        self.embedding_calls = 0  # /embeddings requests admitted and not yet answered (on the event loop only)
        self.last_load: LoadProgress | None = None  # the current or last load, with its progress or error
        self._load_task: asyncio.Task[None] | None = None

    def status(self) -> AgentStatus:
        engine, loaded = self.engine, self.engine.loaded
        return AgentStatus(
            node_id=self.node_id, model=loaded.name if loaded else None, loaded=loaded is not None,
            loading=self.loading, busy=engine.busy or self.embedding_calls > 0,
            active=engine.active + self.embedding_calls, queue_depth=engine.queue_depth,
            max_queue=engine.config.max_queue, cache_entries=len(engine.cache),
            cache_bytes=engine.cache.nbytes, rss_bytes=psutil.Process(os.getpid()).memory_info().rss,
            ram_total_bytes=psutil.virtual_memory().total,
            platform=f"{platform.system()}-{platform.machine()}", shard=engine.shard, shard_error=engine.shard_error,
            restarting=engine.restart_due, load_progress=self.last_load.view() if self.last_load else None,
        )

    async def load(self, name: str, shard: ShardSpec | None = None, progress: LoadProgress | None = None) -> None:
        if self.engine.restart_due:
            raise ApiError(503, "this agent is restarting after its distributed group ended; retry shortly",
                           code="agent_restarting", headers={"Retry-After": LOADING_RETRY_AFTER_S})
        self.loading = name
        progress = self.last_load = progress or LoadProgress(name)
        try:
            try:
                path = await asyncio.to_thread(registry.resolve, name, self.data_dir)
            except FileNotFoundError as exc:
                raise ApiError(404, str(exc), code="model_not_found") from None
            try:
                await asyncio.wrap_future(self.engine.load(name, Path(path), shard, progress))
            except AgentRestarting as exc:
                raise ApiError(503, str(exc), code="agent_restarting",
                               headers={"Retry-After": LOADING_RETRY_AFTER_S}) from None
            except (ValueError, RuntimeError) as exc:
                if shard is None:
                    raise
                raise ApiError(400 if isinstance(exc, ValueError) else 502, f"sharded load failed: {exc}",
                               code="shard_load_failed") from None
            progress.finish()
        except BaseException as exc:
            progress.finish(getattr(exc, "message", None) or str(exc) or type(exc).__name__)
            raise
        finally:
            self.loading = None

    def start_load(self, name: str) -> None:
        """The load in the background: the caller polls ``/agent/v1/status`` (``load_progress``) for its end."""
        if self.loading:
            raise ApiError(409, f"the agent is already loading {self.loading}", code="load_in_progress")

        # At once, before the task runs, so the next status already shows this load (never the previous one's
        # "done", which a poller would take for this one's).
        progress = self.last_load = LoadProgress(name)
        self.loading = name

        async def run() -> None:
            with contextlib.suppress(Exception):  # the outcome is in last_load, read through the status
                await self.load(name, progress=progress)

        self._load_task = asyncio.create_task(run())


def _json(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status)


def _loaded(state: AgentState) -> Any:
    loaded = state.engine.loaded
    if loaded is None and state.loading:
        raise ApiError(503, f"the agent is loading {state.loading}; retry shortly", code="model_loading",
                       headers={"Retry-After": LOADING_RETRY_AFTER_S})
    if loaded is None:
        raise ApiError(503, "no model is loaded on this agent; POST /agent/v1/load first",
                       code="model_not_loaded", headers={"Retry-After": RETRY_AFTER_S})
    return loaded


def _text_chars(body: InternalRequest | TokenizeRequest) -> int:
    """Characters of text the prompt will hold at least (what the template adds only makes it longer)."""
    total = 0
    for message in body.messages:
        for part in message.content:
            for attr in ("text", "content"):
                value = getattr(part, attr, None)
                if isinstance(value, str):
                    total += len(value)
    return total + sum(len(t.description or "") for t in body.tools)


def _check_bounds(loaded: Any, body: InternalRequest | TokenizeRequest) -> None:
    """Refuse what cannot fit before rendering or tokenizing any of it: a 50 MB prompt is a 400 in
    microseconds, not 55 s of tokenizing and gigabytes of RSS. No token of a real vocabulary spans more than
    ``ISTHMUS_AGENT_MAX_CHARS_PER_TOKEN`` characters, so more characters than context x that cannot fit."""
    max_parts = settings.env_positive_int("ISTHMUS_AGENT_MAX_PARTS", DEFAULT_MAX_PARTS)
    parts = len(body.messages) + sum(len(m.content) for m in body.messages) + len(body.tools)
    if parts > max_parts:
        raise ApiError(400, f"the prompt has {parts} messages, content blocks and tools; this agent takes at most "
                            f"{max_parts} (ISTHMUS_AGENT_MAX_PARTS)", code="too_many_parts", param="messages")
    if loaded.context_length:
        per_token = settings.env_positive_int("ISTHMUS_AGENT_MAX_CHARS_PER_TOKEN", DEFAULT_MAX_CHARS_PER_TOKEN)
        chars = _text_chars(body)
        if chars > loaded.context_length * per_token:
            raise ApiError(400, f"the prompt's text is {chars} characters, more than the model's context of "
                                f"{loaded.context_length} tokens can hold", code="context_length_exceeded",
                           param="messages")
    seed = body.sampling.seed if isinstance(body, InternalRequest) else None
    if seed is not None and not 0 <= seed < 2 ** 64:
        raise ApiError(400, "seed: must be between 0 and 2**64 - 1", code="invalid_value", param="seed")


async def _prompt(loaded: Any, body: InternalRequest | TokenizeRequest) -> Any:
    if loaded.embedding is not None:
        raise ApiError(400, f"'{loaded.name}' is an embedding model: it serves /v1/embeddings, not chat",
                       code="model_not_chat", param="model")
    _check_bounds(loaded, body)
    tools = body.tools
    forced: str | None = None
    if body.tool_choice and tools:
        mode = body.tool_choice.mode
        if mode == "none":
            tools = []  # the model may not call tools: do not offer them
        elif mode == "tool":
            forced = body.tool_choice.name or ""
            if forced and forced not in {t.name for t in tools}:
                raise ApiError(400, f"tool_choice names {forced!r}, which is not among the tools",
                               code="invalid_tool_choice", param="tool_choice")
        elif mode == "required":
            forced = tools[0].name if len(tools) == 1 else ""
    try:
        prompt = await asyncio.to_thread(build_prompt, loaded.tokenizer, body.messages, tools,
                                         enable_thinking=body.enable_thinking,
                                         reasoning_effort=body.reasoning_effort, forced_tool=forced)
    except ValueError as exc:
        raise ApiError(400, str(exc), code="invalid_prompt") from None
    if loaded.context_length and len(prompt.tokens) >= loaded.context_length:
        raise ApiError(400, f"prompt is {len(prompt.tokens)} tokens; the model's context is "
                            f"{loaded.context_length}", code="context_length_exceeded", param="messages")
    wanted = body.sampling.max_tokens if isinstance(body, InternalRequest) else None
    if wanted and loaded.context_length and len(prompt.tokens) + wanted > loaded.context_length:
        room = loaded.context_length - len(prompt.tokens)
        raise ApiError(400, f"max_tokens is {wanted}, but the model's context of {loaded.context_length} tokens "
                            f"leaves room for {room} after the {len(prompt.tokens)}-token prompt",
                       code="context_length_exceeded", param="max_tokens")
    return prompt


def build_app(state: AgentState, extra_routes: Sequence[BaseRoute] = ()) -> ASGIApp:
    engine = state.engine

    async def generate(request: Request) -> Response:
        try:
            return await _generate(request)
        finally:
            if _declared_bytes(request) >= LARGE_BODY_BYTES:
                engine.call(release_memory)  # the parsed body is garbage now: hand its memory back

    async def _generate(request: Request) -> Response:
        body = await parse_body(request, InternalRequest)
        if body.session_id is None and request.headers.get("x-session-id"):
            body.session_id = request.headers["x-session-id"]
        loaded = _loaded(state)
        prompt = await _prompt(loaded, body)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[BaseModel | None] = asyncio.Queue()
        guard = body.metadata.get("loop_guard", engine.config.loop_guard)

        def emit(event: BaseModel | None) -> None:
            # RuntimeError: the server's loop is gone (shutdown), so nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(events.put_nowait, event)

        job = Job(request=body, prompt=prompt, model_name=loaded.name, loop_guard=bool(guard), emit=emit)
        try:
            engine.submit(job)
        except QueueFull as exc:
            raise ApiError(503, f"agent is at capacity: {exc}", code="queue_full",
                           headers={"Retry-After": RETRY_AFTER_S}) from None
        large = len(prompt.tokens) >= LARGE_PROMPT_TOKENS
        if body.stream:
            return StreamingResponse(_ndjson(engine, job, events, release=large), media_type="application/x-ndjson")
        try:
            return await _whole(request, engine, job, events)
        finally:
            if large:  # a long prefill leaves mlx's buffer cache holding its activations
                engine.call(release_memory)

    async def tokenize(request: Request) -> Response:
        try:
            body = await parse_body(request, TokenizeRequest)
            loaded = _loaded(state)
            prompt = await _prompt(loaded, body)
            return _json(TokenizeResponse(prompt_tokens=len(prompt.tokens), model=loaded.name,
                                          context_length=loaded.context_length,
                                          default_max_tokens=DEFAULT_MAX_TOKENS))
        finally:
            if _declared_bytes(request) >= LARGE_BODY_BYTES:
                engine.call(release_memory)

    async def embeddings(request: Request) -> Response:
        try:
            body = await read_json(request)
            loaded = _loaded(state)
            if loaded.embedding is None:
                raise ApiError(400, f"'{loaded.name}' is a chat model: it does not serve /v1/embeddings",
                               code="model_not_embedding", param="model")
            # Requests run one at a time on the engine thread; beyond the chat's bound on waiting work, a 503.
            if state.embedding_calls >= engine.config.max_batch + engine.config.max_queue:
                raise ApiError(503, f"agent is at capacity: {state.embedding_calls} embedding requests in progress",
                               code="queue_full", headers={"Retry-After": RETRY_AFTER_S})
            state.embedding_calls += 1
            try:
                return JSONResponse(await embed_answer(loaded.embedding, loaded.name, body, engine.call))
            finally:
                state.embedding_calls -= 1
        except ApiError as exc:  # OpenAI's route, OpenAI's error shape (its param and code reach the client)
            return JSONResponse(exc.body(Dialect.OPENAI), status_code=exc.status, headers=exc.headers)

    async def load(request: Request) -> Response:
        body = await parse_body(request, LoadRequest)
        if not body.wait:
            if body.shard is not None:  # a rank's load is part of a group's: the control plane waits for it
                raise ApiError(400, "a sharded load cannot run in the background: send wait=true",
                               param="wait", code="invalid_value")
            state.start_load(body.model)
            return _json(state.status(), status=202)
        await state.load(body.model, body.shard)
        return _json(state.status())

    async def shard_port(request: Request) -> Response:
        """A free port on this host for the data link of a sharded group (the control plane asks each agent
        for one, then sends every rank the same host list)."""
        with socket.socket() as s:
            s.bind(("", 0))  # free on every interface, whichever one the group's links will use
            return JSONResponse({"port": s.getsockname()[1]})

    async def unload(request: Request) -> Response:
        await asyncio.wrap_future(engine.unload())
        return _json(state.status())

    async def status(request: Request) -> Response:
        return _json(state.status())

    async def prometheus(request: Request) -> Response:
        metrics.agent_load(engine.queue_depth, engine.active, 0 if engine.loaded is None else 1)
        payload, content_type = metrics.render()
        return Response(payload, media_type=content_type)

    async def health(request: Request) -> Response:
        loaded = engine.loaded
        if loaded is None and state.loading:  # not healthy yet: whoever waits for the agent keeps waiting
            return _json(AgentHealth(status="loading", model=state.loading), status=503)
        return _json(AgentHealth(status="busy" if engine.busy else "idle",
                                 model=loaded.name if loaded else None, loaded=loaded is not None))

    routes = [
        Route("/agent/v1/generate", generate, methods=["POST"]),
        Route("/agent/v1/tokenize", tokenize, methods=["POST"]),
        Route("/agent/v1/embeddings", embeddings, methods=["POST"]),
        Route("/agent/v1/load", load, methods=["POST"]),
        Route("/agent/v1/unload", unload, methods=["POST"]),
        Route("/agent/v1/status", status, methods=["GET"]),
        Route("/agent/v1/shard/port", shard_port, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *extra_routes,
    ]
    return create_app(routes, service="agent")


def _declared_bytes(request: Request) -> int:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


def release_memory() -> None:
    """On the engine thread (it owns every mlx array): collect garbage, empty mlx's buffer cache and hand
    freed heap pages back to the OS, so one large request does not keep the agent's RSS at its peak."""
    import mlx.core as mx

    gc.collect()
    mx.clear_cache()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _ndjson(engine: Engine, job: Job, events: asyncio.Queue[BaseModel | None], *,
                  release: bool = False) -> AsyncIterator[bytes]:
    """NDJSON lines; everything already queued goes out in one write (never one write per token). While
    nothing comes (waiting for a batch slot, a long prefill), a blank line every ``KEEPALIVE_S``: the gateway
    bounds silence by seconds to tell a frozen agent from a slow model, and skips blank lines."""
    try:
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    first = await events.get()
            except TimeoutError:
                yield b"\n"
                continue
            batch = [first]
            while not events.empty():
                batch.append(events.get_nowait())
            lines = [json.dumps(e.model_dump(mode="json")) + "\n" for e in batch if e is not None]
            if lines:
                yield "".join(lines).encode()
            if batch[-1] is None or None in batch:
                return
    finally:
        if not job.done:  # the client went away: stop generating and free the slot
            engine.cancel(job)
        if release:
            engine.call(release_memory)


async def _whole(request: Request, engine: Engine, job: Job,
                 events: asyncio.Queue[BaseModel | None]) -> Response:
    collected: list[BaseModel] = []
    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    engine.cancel(job)
                    return Response(status_code=499)
                continue
            if event is None:
                break
            if isinstance(event, ErrorEvent):
                raise ApiError(event.status, event.message, code=event.code)
            collected.append(event)
    finally:
        if not job.done:
            engine.cancel(job)
    return _json(collect(collected))

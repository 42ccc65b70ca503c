"""Token bounds for a budget hold: at most how many prompt and output tokens settlement can charge.

A hold is only as safe as its bound. The settlement charges the tokens the backend reports, so the hold must
cover the largest count the backend can report for this request:

- local pools, the default agent, single-Mac upstreams (every backend that talks the agent protocol): the
  exact prompt count from the agent's own tokenizer over the rendered prompt (chat template, default system
  prompt, tools, forced tool call, thinking flags), the same number its usage will report. Counted once per
  (model, prompt) and cached, so a retry or a re-sent prompt costs no round trip; concurrent requests with one
  prompt share one count.
- cloud aliases and the raw passthrough: no tokenizer of ours is the provider's, so a bound no tokenizer can
  exceed: every byte-level BPE (OpenAI's, Anthropic's, Llama's, SentencePiece with byte fallback) turns each
  token into at least one byte of the text, so a text of N UTF-8 bytes is at most N tokens; on top, fixed
  allowances for what providers add around the text (per message, per request, the tool-use preamble) and
  for what is not text (an image or file is billed by the provider's own rule, not by its bytes).
- output: the request's max_tokens; when it names none, the agent's own default capped by what its context
  leaves, or ISTHMUS_DEFAULT_MAX_OUTPUT_TOKENS; that number is then sent to the backend, which stops there.

Should a backend still report more (a provider's change, an unknown multimodal cost), the gate charges no
more than the hold and records the rest as ``unbilled_cost`` (isthmus.services.tenancy.gate).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from isthmus.background import per_loop
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import (
    FilePart,
    ImagePart,
    InternalRequest,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

# Allowances of the byte bound (tokens). Why these sizes: OpenAI frames a chat message in 3-4 tokens and a
# reply in 3; Anthropic's tool-use system prompt is 313-346 tokens; an image is at most ~1,600 tokens on
# Anthropic (1.15 megapixels / 750), 765 on gpt-4o, ~2,500 on the patch-priced OpenAI models.
PER_REQUEST_TOKENS = 64
PER_MESSAGE_TOKENS = 16
TOOLS_PREAMBLE_TOKENS = 1024
PER_TOOL_TOKENS = 32
PER_IMAGE_TOKENS = 4096
DEFAULT_OUTPUT_TOKENS = 4096

COUNT_CACHE_ITEMS = 4096
COUNT_CACHE_SECONDS = 300.0  # a model replaced under the same name is re-counted within this


def default_output_tokens() -> int:
    """The output bound of a request that names no max and whose backend reports no limit of its own."""
    try:
        return max(1, int(os.environ.get("ISTHMUS_DEFAULT_MAX_OUTPUT_TOKENS", DEFAULT_OUTPUT_TOKENS)))
    except ValueError:
        return DEFAULT_OUTPUT_TOKENS


@dataclass(frozen=True)
class TokenBound:
    input_tokens: int
    output_tokens: int
    output_defaulted: bool = False  # the request named no max: ``output_tokens`` must be sent to the backend
    exact: bool = False  # input counted by the model's own tokenizer (else the byte bound)


# ---------------------------------------------------------------- the byte bound (cloud, passthrough)

def _utf8(text: str) -> int:
    return len(text.encode("utf-8"))


def byte_bound(request: InternalRequest) -> int:
    """At most this many prompt tokens for any provider's tokenizer (see the module's docstring)."""
    total = PER_REQUEST_TOKENS
    for message in request.messages:
        total += PER_MESSAGE_TOKENS + _utf8(message.role) + _utf8(message.name or "")
        for part in message.content:
            if isinstance(part, TextPart | ThinkingPart):
                total += _utf8(part.text) + PER_MESSAGE_TOKENS * isinstance(part, ThinkingPart)
            elif isinstance(part, ToolCallPart):
                total += PER_MESSAGE_TOKENS + _utf8(part.id) + _utf8(part.name) + _utf8(part.arguments)
            elif isinstance(part, ToolResultPart):
                total += PER_MESSAGE_TOKENS + _utf8(part.tool_call_id) + _utf8(part.content)
            elif isinstance(part, ImagePart):
                total += PER_IMAGE_TOKENS  # billed as an image, whatever its encoding's size
            elif isinstance(part, FilePart):
                # A document read natively: its text, and each page also as an image; the encoded size bounds
                # the text, the allowance covers the page images of a short document.
                total += PER_IMAGE_TOKENS + _utf8(part.text or "") + len(part.data or "")
    if request.tools:
        total += TOOLS_PREAMBLE_TOKENS
        total += sum(PER_TOOL_TOKENS + _utf8(t.model_dump_json()) for t in request.tools)
    if request.tool_choice is not None and request.tool_choice.name:
        total += PER_MESSAGE_TOKENS + _utf8(request.tool_choice.name)
    if request.response_format is not None:
        total += PER_MESSAGE_TOKENS + _utf8(request.response_format.model_dump_json())
    return total


_MEDIA_KEYS = {"image_url", "input_image", "image", "file", "input_file", "file_id", "audio"}


def passthrough_bound(body: Any) -> int:
    """Prompt tokens of a raw OpenAI call (embeddings, moderations, images, speech), as any provider counts
    them: the UTF-8 bytes of the JSON body (token-id arrays included: an id is at least one digit) plus a
    per-input allowance, and an image allowance for each media entry (data URLs are not counted twice)."""
    total = PER_REQUEST_TOKENS

    def walk(value: Any) -> None:
        nonlocal total
        if isinstance(value, dict):
            for key, item in value.items():
                total += _utf8(str(key))
                if key in _MEDIA_KEYS or (key == "type" and isinstance(item, str) and item in _MEDIA_KEYS):
                    total += PER_IMAGE_TOKENS
                    if key != "type":
                        continue
                walk(item)
        elif isinstance(value, list):
            total += PER_MESSAGE_TOKENS * len(value)
            for item in value:
                walk(item)
        else:
            total += _utf8(json.dumps(value, ensure_ascii=False))

    walk(body)
    return total


# ---------------------------------------------------------------- the exact count (agent-protocol backends)

class _CountCache:
    """(model, prompt digest) -> the agent's answer, LRU and time-limited; one count in flight per key and loop."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[float, TokenizeResponse]] = OrderedDict()
        self._inflight: dict[asyncio.AbstractEventLoop, dict[tuple[str, str], asyncio.Future[TokenizeResponse]]] = {}

    def get(self, key: tuple[str, str]) -> TokenizeResponse | None:
        found = self._items.get(key)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            self._items.pop(key, None)
            return None
        self._items.move_to_end(key)
        return found[1]

    def put(self, key: tuple[str, str], value: TokenizeResponse) -> None:
        self._items[key] = (time.monotonic() + COUNT_CACHE_SECONDS, value)
        self._items.move_to_end(key)
        while len(self._items) > COUNT_CACHE_ITEMS:
            self._items.popitem(last=False)

    async def count(self, key: tuple[str, str],
                    fetch: Callable[[], Awaitable[TokenizeResponse]]) -> TokenizeResponse:
        cached = self.get(key)
        if cached is not None:
            return cached
        inflight = per_loop(self._inflight, dict)
        pending = inflight.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if pending.cancelled() and task is not None and not task.cancelling():
                    return await self.count(key, fetch)  # the request that was counting went away, not this one
                raise
        future: asyncio.Future[TokenizeResponse] = asyncio.get_running_loop().create_future()
        inflight[key] = future
        try:
            counted = await fetch()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: the waiters (if any) re-raise it, nobody else has to
            raise
        else:
            self.put(key, counted)
            future.set_result(counted)
            return counted
        finally:
            inflight.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


counts = _CountCache()


def tokenize_request(request: InternalRequest) -> TokenizeRequest:
    """What decides the rendered prompt: messages, tools, the tool choice and the thinking flags."""
    return TokenizeRequest(messages=request.messages, tools=request.tools, tool_choice=request.tool_choice,
                           enable_thinking=request.enable_thinking, reasoning_effort=request.reasoning_effort)


def _digest(probe: TokenizeRequest) -> str:
    return hashlib.blake2b(probe.model_dump_json(exclude_none=True).encode(), digest_size=16).hexdigest()


def _output_bound(request: InternalRequest, prompt_tokens: int, counted: TokenizeResponse | None) -> tuple[int, bool]:
    if request.sampling.max_tokens:
        return request.sampling.max_tokens, False
    if counted is None:
        return default_output_tokens(), True
    limit = counted.default_max_tokens or default_output_tokens()
    if counted.context_length:
        limit = min(limit, max(1, counted.context_length - prompt_tokens))
    return limit, True


async def bound_for(backend: Any, request: InternalRequest) -> TokenBound:
    """The bound of ``request`` (as routed: concrete model, route defaults applied) on ``backend``."""
    prompt_count = getattr(backend, "prompt_count", None)
    if prompt_count is not None:
        probe = tokenize_request(request)
        counted: TokenizeResponse = await counts.count((request.model, _digest(probe)),
                                                       lambda: prompt_count(probe))
        output, defaulted = _output_bound(request, counted.prompt_tokens, counted)
        return TokenBound(counted.prompt_tokens, output, defaulted, exact=True)
    output, defaulted = _output_bound(request, 0, None)
    return TokenBound(byte_bound(request), output, defaulted)


def fixed(bound: TokenBound) -> Callable[[], Awaitable[TokenBound]]:
    """A bound already known, in the shape the gate takes."""
    async def known() -> TokenBound:
        return bound

    return known


class RequestBound:
    """The bound of one request, computed on first call only (the gate calls it only when a hold is needed:
    a priced model and a principal whose spend counts), and kept for the caller to read afterwards."""

    def __init__(self, backend: Any, request: InternalRequest) -> None:
        self.backend, self.request = backend, request
        self.bound: TokenBound | None = None

    async def __call__(self) -> TokenBound:
        if self.bound is None:
            self.bound = await bound_for(self.backend, self.request)
        return self.bound

    def bounded_request(self) -> InternalRequest:
        """The request as the backend must get it: with the held output max when the caller named none."""
        bound = self.bound
        if bound is None or not bound.output_defaulted:
            return self.request
        sampling = self.request.sampling.model_copy(update={"max_tokens": bound.output_tokens})
        return self.request.model_copy(update={"sampling": sampling})

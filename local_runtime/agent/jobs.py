"""One generation request as the engine thread sees it: prompt, limits, output pipeline, timings.

The engine thread owns every field after submission; the asyncio side only reads events from
``emit`` (which crosses threads with ``call_soon_threadsafe``) and may set ``cancelled``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from isthmus import metrics
from isthmus_contracts.internal import (
    ErrorEvent,
    FinishEvent,
    FinishReason,
    InternalRequest,
    StartEvent,
    Usage,
    UsageEvent,
)
from local_runtime.agent.prompt import Prompt
from local_runtime.agent.text_stream import LoopGuard, OutputPipeline

DEFAULT_MAX_TOKENS = 512
Emit = Callable[[BaseModel | None], None]  # None marks the end of the stream


@dataclass
class Job:
    request: InternalRequest
    prompt: Prompt
    emit: Emit
    model_name: str
    loop_guard: bool = True
    id: str = field(default_factory=lambda: f"gen-{uuid.uuid4().hex[:20]}")
    created: int = field(default_factory=lambda: int(time.time()))
    cancelled: bool = False
    # engine-side state
    uid: int | None = None
    cached_tokens: int | None = None
    prefill_tokens: int = 0
    completion_tokens: int = 0
    t_admitted: float = 0.0
    t_first: float | None = None
    detokenizer: Any = None
    pipeline: OutputPipeline | None = None
    guard: LoopGuard | None = None
    done: bool = False

    @property
    def max_tokens(self) -> int:
        return self.request.sampling.max_tokens or DEFAULT_MAX_TOKENS

    @property
    def session_id(self) -> str | None:
        return self.request.session_id

    def start(self, detokenizer: Any, cached_tokens: int | None) -> None:
        self.detokenizer = detokenizer
        self.cached_tokens = cached_tokens
        self.prefill_tokens = len(self.prompt.tokens) - (cached_tokens or 0)
        self.t_admitted = time.perf_counter()
        self.pipeline = OutputPipeline(self.request.sampling.stop, thinking_open=self.prompt.thinking_open,
                                       thinking_enabled=self.request.enable_thinking)
        self.guard = LoopGuard(enabled=self.loop_guard)
        self.emit(StartEvent(id=self.id, model=self.model_name, created=self.created,
                             prompt_tokens=len(self.prompt.tokens), cached_tokens=cached_tokens))
        if self.prompt.prefill:
            self._emit_all(self.pipeline.feed(self.prompt.prefill))

    def on_token(self, token: int, *, is_eos: bool) -> bool:
        """Feed one generated token; True when the guard says the output is looping."""
        assert self.pipeline is not None and self.guard is not None
        if self.t_first is None:
            self.t_first = time.perf_counter()
        self.completion_tokens += 1
        if is_eos:
            return False
        self.detokenizer.add_token(token)
        self._emit_all(self.pipeline.feed(self.detokenizer.last_segment))
        return self.guard.feed(token)

    @property
    def forced_call_done(self) -> bool:
        """A forced tool call is complete: the answer is that call and nothing after it."""
        return self.prompt.forced_tool and self.pipeline is not None and self.pipeline.tool_calls > 0

    @property
    def stop_matched(self) -> bool:
        return self.pipeline is not None and self.pipeline.stop.matched is not None

    def finish(self, reason: FinishReason, *, loop_guard: bool = False) -> None:
        assert self.pipeline is not None
        self.detokenizer.finalize()
        self._emit_all(self.pipeline.feed(self.detokenizer.last_segment))
        self._emit_all(self.pipeline.flush())
        if self.pipeline.tool_calls and reason in ("stop", "length", "stop_sequence"):
            reason = "tool_calls"
        now = time.perf_counter()
        first = self.t_first or now
        usage = Usage(
            prompt_tokens=len(self.prompt.tokens),
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
            prefill_tps=round(self.prefill_tokens / max(first - self.t_admitted, 1e-9), 2),
            decode_tps=(round((self.completion_tokens - 1) / (now - first), 2)
                        if self.completion_tokens > 1 and now > first else None),
        )
        metrics.agent_generation(self.model_name, self.completion_tokens, now - first, self.cached_tokens or 0)
        self.emit(UsageEvent(usage=usage))
        self.emit(FinishEvent(reason=reason, stop_sequence=self.pipeline.stop.matched, loop_guard=loop_guard))
        self.emit(None)
        self.done = True

    def used(self) -> Usage | None:
        """What the job has used so far (its prompt once started, the tokens generated); None before it started."""
        if self.pipeline is None:
            return None
        return Usage(prompt_tokens=len(self.prompt.tokens), completion_tokens=self.completion_tokens,
                     cached_tokens=self.cached_tokens)

    def fail(self, message: str, status: int, code: str = "backend_error") -> None:
        """End the stream with an error that says what was used up to here (the gateway bills it)."""
        self.emit(ErrorEvent(message=message, code=code, status=status, usage=self.used()))
        self.emit(None)
        self.done = True

    def _emit_all(self, events: list[Any]) -> None:
        for event in events:
            # Every delta carries the running count, so a relay cut before the usage event still knows it.
            event.completion_tokens = self.completion_tokens
            self.emit(event)

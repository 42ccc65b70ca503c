"""Turning decoded model text into protocol events: stop sequences, think blocks, tool calls, loop guard.

Text arrives in arbitrary chunks (token boundaries do not respect markup), so every stage holds back the
tail that could still become a marker (``</thi``, ``<tool_ca``, the start of a stop sequence) and only
releases it once it cannot. All classes here are pure logic: no mlx, unit-tested on their own.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from isthmus_contracts.internal import ReasoningDelta, TextDelta, ToolCallEvent

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
Delta = TextDelta | ReasoningDelta | ToolCallEvent


def held_suffix_len(text: str, markers: list[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of some marker."""
    best = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), best, -1):
            if text.endswith(marker[:size]):
                best = size
                break
    return best


class StopMatcher:
    """Finds the first stop sequence in the stream; text that might start one is held back."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._pending = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """Text safe to release; after a match, ``matched`` is set and later text is dropped."""
        if self.matched is not None:
            return ""
        self._pending += text
        hits = [(self._pending.find(s), s) for s in self.stops if s in self._pending]
        if hits:
            index, stop = min(hits)
            self.matched = stop
            out, self._pending = self._pending[:index], ""
            return out
        keep = held_suffix_len(self._pending, self.stops)
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(out):]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.matched else self._pending), ""
        return out


class ThinkSplitter:
    """Routes text inside ``<think>…</think>`` to reasoning; the markers themselves never leak."""

    def __init__(self, *, thinking: bool = False) -> None:
        self.thinking = thinking  # True when the prompt itself opened the block
        self._pending = ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        self._pending += text
        out: list[tuple[str, str]] = []
        while True:
            marker = THINK_CLOSE if self.thinking else THINK_OPEN
            index = self._pending.find(marker)
            if index < 0:
                break
            self._emit(out, self._pending[:index])
            self._pending = self._pending[index + len(marker):]
            self.thinking = not self.thinking
        keep = held_suffix_len(self._pending, [THINK_CLOSE if self.thinking else THINK_OPEN])
        self._emit(out, self._pending[: len(self._pending) - keep])
        self._pending = self._pending[len(self._pending) - keep:]
        return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if text:
            out.append(("reasoning" if self.thinking else "text", text))


def close_truncated_json(raw: str) -> str:
    """Close an unterminated JSON text: open string, dangling ``,``/``:``, then arrays/objects."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in raw:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]" and stack:
            stack.pop()
    text = raw
    if in_string:
        text = (text[:-1] if escaped else text) + '"'
    text = text.rstrip()
    if text.endswith(","):
        text = text[:-1]
    elif text.endswith(":"):
        text += " null"
    return text + "".join(reversed(stack))


def _repair_candidates(raw: str) -> list[str]:
    """Ways to read a truncated call: close it as is, or drop the last (partial) member and close."""
    out = [close_truncated_json(raw)]
    if "," in raw:
        out.append(close_truncated_json(raw[: raw.rfind(",")]))
    return out


@dataclass
class ParsedToolCall:
    name: str
    arguments: str  # JSON text
    recovered: bool = False  # the JSON was truncated and closed by us


def parse_tool_call(raw: str) -> ParsedToolCall | None:
    """``{"name": ..., "arguments": {...}}`` (``parameters`` also accepted); truncated JSON is closed."""
    raw = raw.strip()
    candidates = [(raw, False)] + [(c, True) for c in _repair_candidates(raw)]
    for candidate, recovered in candidates:
        try:
            payload = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if not isinstance(payload, dict) or not isinstance(payload.get("name"), str):
            continue
        args = payload.get("arguments", payload.get("parameters"))
        if args is None:  # cut off before the arguments: a call with none is still a call
            args = {}
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                return ParsedToolCall(payload["name"], args, recovered)
        return ParsedToolCall(payload["name"], json.dumps(args, ensure_ascii=False), recovered)
    return None


class ToolCallExtractor:
    """Pulls ``<tool_call>{json}</tool_call>`` out of answer text; the markup never reaches the text."""

    def __init__(self) -> None:
        self._pending = ""
        self._in_call = False
        self.calls: list[ParsedToolCall] = []
        self.unparsed: list[str] = []  # markup we could not read, returned to the caller as text

    def feed(self, text: str) -> list[str | ParsedToolCall]:
        self._pending += text
        out: list[str | ParsedToolCall] = []
        while True:
            marker = TOOL_CLOSE if self._in_call else TOOL_OPEN
            index = self._pending.find(marker)
            if index < 0:
                break
            chunk, self._pending = self._pending[:index], self._pending[index + len(marker):]
            if self._in_call:
                self._finish_call(chunk, out)
            elif chunk:
                out.append(chunk)
            self._in_call = not self._in_call
        if not self._in_call:
            keep = held_suffix_len(self._pending, [TOOL_OPEN])
            if len(self._pending) > keep:
                out.append(self._pending[: len(self._pending) - keep])
                self._pending = self._pending[len(self._pending) - keep:]
        return out

    def flush(self) -> list[str | ParsedToolCall]:
        """End of output: an unclosed call is recovered if its JSON can be closed, else returned as text."""
        out: list[str | ParsedToolCall] = []
        if self._in_call:
            self._finish_call(self._pending, out, truncated=True)
        elif self._pending:
            out.append(self._pending)
        self._pending, self._in_call = "", False
        return out

    def _finish_call(self, raw: str, out: list[str | ParsedToolCall], truncated: bool = False) -> None:
        call = parse_tool_call(raw)
        if call is None:
            markup = f"{TOOL_OPEN}{raw}" + ("" if truncated else TOOL_CLOSE)
            self.unparsed.append(markup)
            out.append(markup)
            return
        self.calls.append(call)
        out.append(call)


@dataclass
class LoopGuard:
    """Stops a degenerate tail: the last ``window`` tokens repeat with a period of at most ``max_period``."""

    window: int = 64
    max_period: int = 16
    enabled: bool = True
    _tail: list[int] = field(default_factory=list)

    def feed(self, token: int) -> bool:
        if not self.enabled:
            return False
        self._tail.append(token)
        if len(self._tail) > self.window:
            del self._tail[0]
        if len(self._tail) < self.window:
            return False
        tail = self._tail
        return any(all(tail[i] == tail[i - p] for i in range(p, len(tail)))
                   for p in range(1, self.max_period + 1))


class OutputPipeline:
    """Decoded text in, protocol deltas out: stop sequences, then think split, then tool calls."""

    def __init__(self, stops: list[str], *, thinking_open: bool, thinking_enabled: bool | None) -> None:
        self.stop = StopMatcher(stops)
        self.think = ThinkSplitter(thinking=thinking_open)
        self.tools = ToolCallExtractor()
        self.thinking_enabled = thinking_enabled
        self.answer_chars = 0
        self.tool_calls = 0
        self.reasoning: list[str] = []

    def feed(self, text: str) -> list[Delta]:
        return self._route(self.think.feed(self.stop.feed(text)))

    def flush(self) -> list[Delta]:
        """End of generation: release held text, recover an open tool call, guarantee an answer."""
        events = self._route(self.think.feed(self.stop.flush()) + self.think.flush())
        events += self._tool_output(self.tools.flush())
        if self.thinking_enabled is False and self.answer_chars == 0 and self.reasoning:
            # Thinking was switched off but the model only "thought": that text is the answer.
            events.append(TextDelta(text="".join(self.reasoning).strip()))
        return events

    def _route(self, parts: list[tuple[str, str]]) -> list[Delta]:
        events: list[Delta] = []
        for kind, text in parts:
            if kind == "reasoning":
                self.reasoning.append(text)
                events.append(ReasoningDelta(text=text))
            else:
                events += self._tool_output(self.tools.feed(text))
        return events

    def _tool_output(self, items: list[str | ParsedToolCall]) -> list[Delta]:
        events: list[Delta] = []
        for item in items:
            if isinstance(item, ParsedToolCall):
                events.append(ToolCallEvent(index=self.tool_calls, id=f"call_{uuid.uuid4().hex[:24]}",
                                            name=item.name, arguments=item.arguments))
                self.tool_calls += 1
            elif item:
                self.answer_chars += len(item.strip())
                events.append(TextDelta(text=item))
        return events

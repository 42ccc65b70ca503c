"""API Gateway HTTP API route matching: most specific route first, greedy ``{proxy+}`` last."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class CompiledRoute(Generic[T]):
    method: str
    path: str
    pattern: re.Pattern[str]
    params: tuple[str, ...]
    rank: tuple[int, int, int, int]  # lower sorts first
    target: T

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


def compile_route(method: str, path: str, target: T) -> CompiledRoute[T]:
    segments = [s for s in path.split("/") if s]
    regex, params, literals, greedy, variables = "", [], 0, 0, 0
    for seg in segments:
        greedy_match = re.fullmatch(r"\{([A-Za-z0-9_]+)\+\}", seg)
        var_match = re.fullmatch(r"\{([A-Za-z0-9_]+)\}", seg)
        if greedy_match:
            params.append(greedy_match.group(1))
            regex += f"/(?P<{greedy_match.group(1)}>.+)"
            greedy = 1
        elif var_match:
            params.append(var_match.group(1))
            regex += f"/(?P<{var_match.group(1)}>[^/]+)"
            variables += 1
        else:
            regex += "/" + re.escape(seg)
            literals += 1
    pattern = re.compile(f"^{regex or '/'}/?$", re.DOTALL)  # a path may hold a (percent-encoded) newline
    # Exact routes beat parameterised ones, which beat greedy ones; more literal segments win among
    # equals; a named method beats ANY.
    rank = (greedy, variables, -literals, 1 if method == "ANY" else 0)
    return CompiledRoute(method, path, pattern, tuple(params), rank, target)


class RouteTable(Generic[T]):
    def __init__(self) -> None:
        self._routes: list[CompiledRoute[T]] = []
        self._cache: dict[tuple[str, str], tuple[CompiledRoute[T], dict[str, str]] | None] = {}

    def add(self, method: str, path: str, target: T) -> None:
        self._routes.append(compile_route(method.upper(), path, target))
        self._routes.sort(key=lambda r: r.rank)
        self._cache.clear()

    def match(self, method: str, path: str) -> tuple[CompiledRoute[T], dict[str, str]] | None:
        key = (method, path)
        if key in self._cache:
            return self._cache[key]
        found = None
        for route in self._routes:
            if route.method not in ("ANY", method):
                continue
            m = route.pattern.match(path)
            if m:
                found = (route, {k: v for k, v in m.groupdict().items() if v is not None})
                break
        if len(self._cache) < 4096:  # bounded: paths carry ids
            self._cache[key] = found
        return found

    def __len__(self) -> int:
        return len(self._routes)

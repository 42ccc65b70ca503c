"""The Lambda entry of every function: ``app`` and ``handler`` that import the function's routes on first use.

Each ``functions/<group>/app.py`` is two lines over this; the group's code lives in ``routes.py`` next to it
(its Starlette ``app`` and Powertools-wrapped ``handler``). By default the routes are imported while ``app`` is,
in Lambda's init phase: init runs before the first request is routed to the sandbox, gets the full CPU and is
what SnapStart snapshots, so that is where the import belongs. ``ISTHMUS_LAZY_IMPORT=1`` defers it to the first
invoke instead (init then pays for neither Starlette, pydantic nor Powertools); that moves the cost, it does
not remove it (``bench/cold_import.py`` prints both).

This module imports nothing heavy, and must stay that way.
"""

from __future__ import annotations

import importlib
import os

TYPE_CHECKING = False  # not `from typing import ...`: typing alone is ~14 ms of import on this machine
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


class LazyRoutes:
    """The ASGI app and the Lambda handler of a routes module that is imported on the first call."""

    def __init__(self, module: str) -> None:
        self.module_name = module
        self._module: ModuleType | None = None

    def load(self) -> ModuleType:
        if self._module is None:
            self._module = importlib.import_module(self.module_name)
        return self._module

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI: the local edge, uvicorn (run.sh) and tests serve this like the Starlette app it stands for."""
        await self.load().app(scope, receive, send)

    def handler(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.load().handler(event, context)
        return result


def lazy_entry(entry_module: str, routes: str = "routes") -> LazyRoutes:
    """For ``app.py``: its sibling ``routes`` module, as a top-level module on Lambda (``app`` -> ``routes``)
    and inside the package locally (``functions.health.app`` -> ``functions.health.routes``)."""
    package = entry_module.rpartition(".")[0]
    lazy = LazyRoutes(f"{package}.{routes}" if package else routes)
    if os.environ.get("ISTHMUS_LAZY_IMPORT", "").lower() not in {"1", "true", "yes"}:
        lazy.load()
    return lazy

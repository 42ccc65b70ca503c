"""Work a long-running process must do before it exits (e.g. give budget leases back).

The local edge (and any ASGI server in front of these apps) calls :func:`shutdown` on the ASGI lifespan
shutdown event; under plain Lambda nothing registers, since a sandbox can be frozen or reaped unannounced.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

_hooks: list[Callable[[], Awaitable[None]]] = []


def on_shutdown(hook: Callable[[], Awaitable[None]]) -> None:
    _hooks.append(hook)


async def shutdown() -> None:
    """Run every hook once, newest first; one failing hook does not stop the others."""
    while _hooks:
        hook = _hooks.pop()
        with contextlib.suppress(Exception):
            await hook()

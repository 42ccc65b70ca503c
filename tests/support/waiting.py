"""Waiting for a condition in tests: a wait, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

FIRST_PAUSE_S = 0.02


def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """``check()``'s first truthy value; AssertionError when none came within ``timeout`` seconds. The pauses
    between checks start at 20 ms and double up to ``interval``: a condition that holds soon is seen soon, a
    long wait still checks only every ``interval``."""
    deadline = time.monotonic() + timeout
    pause = min(FIRST_PAUSE_S, interval)
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(pause)
        pause = min(interval, pause * 2)
    raise AssertionError("condition not reached")

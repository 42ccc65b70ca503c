"""Waiting for a condition in tests: a wait, never a timing assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """``check()``'s first truthy value; AssertionError when none came within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not reached")

"""The AWS clients of this process, from one botocore session.

botocore directly, not boto3: for a low-level client boto3 adds nothing but its import (s3transfer and
multiprocessing, ~75 M instructions, ~25 ms of a cold start on this machine) and a default session of its own.
botocore is imported on first use, never at module import (it is ~400 M instructions more).
"""

from __future__ import annotations

import threading
from typing import Any

from isthmus import metrics
from isthmus.settings import env_number

_lock = threading.Lock()
_session: list[Any] = []  # the one botocore session, once made


def call_limits() -> tuple[float, float, int]:
    """(connect timeout s, read timeout s, attempts) of every AWS call (DynamoDB, KMS), from
    ``ISTHMUS_STORE_CONNECT_TIMEOUT_SECONDS`` (2), ``ISTHMUS_STORE_READ_TIMEOUT_SECONDS`` (3) and
    ``ISTHMUS_STORE_MAX_ATTEMPTS`` (3, the first included).

    botocore's defaults (60 s connect, 60 s read, retried) let a frozen store hold a request for minutes; a
    DynamoDB call answers in milliseconds, so a few seconds per attempt is generous, and the whole call is
    bounded by about attempts x (read timeout + backoff): ~10 s by default, then the caller's 503."""
    return (env_number("ISTHMUS_STORE_CONNECT_TIMEOUT_SECONDS", 2.0, 0.1),
            env_number("ISTHMUS_STORE_READ_TIMEOUT_SECONDS", 3.0, 0.1),
            int(env_number("ISTHMUS_STORE_MAX_ATTEMPTS", 3, 1)))


def client(service: str, **kwargs: Any) -> Any:
    """A new low-level client for ``service`` (callers cache it: each costs a service model load), its calls
    bounded by :func:`call_limits` unless the caller passes its own ``config``."""
    with _lock:  # botocore sessions are not thread-safe; the clients they make are
        if not _session:
            # cold start: botocore (~100 ms) only on the first AWS call
            import botocore.session

            _session.append(botocore.session.get_session())
        if "config" not in kwargs:
            # cold start: botocore only on the first AWS call
            from botocore.config import Config

            connect_s, read_s, attempts = call_limits()
            kwargs["config"] = Config(connect_timeout=connect_s, read_timeout=read_s,
                                      retries={"total_max_attempts": attempts, "mode": "standard"})
        return metrics.watch_store_client(_session[0].create_client(service, **kwargs))


def reset() -> None:
    """Forget the session (tests: moto registers its handlers on sessions made after it is imported)."""
    with _lock:
        _session.clear()

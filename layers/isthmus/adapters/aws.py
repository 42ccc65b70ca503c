"""The AWS clients of this process, from one botocore session.

botocore directly, not boto3: for a low-level client boto3 adds nothing but its import (s3transfer and
multiprocessing, ~75 M instructions, ~25 ms of a cold start on this machine) and a default session of its own.
botocore is imported on first use, never at module import (it is ~400 M instructions more).
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_session: list[Any] = []  # the one botocore session, once made


def client(service: str, **kwargs: Any) -> Any:
    """A new low-level client for ``service`` (callers cache it: each costs a service model load)."""
    with _lock:  # botocore sessions are not thread-safe; the clients they make are
        if not _session:
            import botocore.session

            _session.append(botocore.session.get_session())
        return _session[0].create_client(service, **kwargs)


def reset() -> None:
    """Forget the session (tests: moto registers its handlers on sessions made after it is imported)."""
    with _lock:
        _session.clear()

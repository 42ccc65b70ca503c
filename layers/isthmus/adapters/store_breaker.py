"""A circuit breaker on the store client: once the store stops answering, calls fail at once for a moment.

Why: every store call is bounded (connect/read timeouts, a few attempts: isthmus.adapters.aws.call_limits), but
a request that needs three store calls against a frozen store still waits three bounds (~30 s), and every
concurrent request holds a worker thread for as long. After ``TRIP_AFTER`` attempts in a row failed in transport
(timeout, refused or reset connection) with no answer in between, the breaker opens: for ``open_seconds``
(``ISTHMUS_STORE_BREAKER_SECONDS``, 2) every attempt fails at once with :class:`StoreCircuitOpen`, which the
callers turn into the usual 503 + Retry-After. Then one attempt at a time goes through again (half-open); its
answer closes the breaker, its failure opens it again. An answer of any kind (an error status included) proves
the store is there, so only transport failures count.

It hooks botocore's own events (``before-send`` to refuse, ``response-received`` to count every attempt), so
every call of the client is covered without wrapping the adapters' code; the lean calls beside the client
(isthmus.adapters.ddb_lean) call ``before_attempt`` and ``after_attempt`` themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from isthmus import settings
from isthmus.errors import StoreCircuitOpen

TRIP_AFTER = 2


def open_seconds() -> float:
    return settings.env_number("ISTHMUS_STORE_BREAKER_SECONDS", 2.0)


class StoreBreaker:
    def __init__(self, open_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.open_s = open_seconds() if open_s is None else open_s
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0  # transport failures in a row
        self._open_until = 0.0
        self._probing = False  # half-open: one attempt is out to see whether the store is back

    def attach(self, client: Any) -> Any:
        if self.open_s > 0:
            client.meta.events.register("before-send", self._before_send)
            client.meta.events.register("response-received", self._response_received)
        return client

    def _before_send(self, **_: Any) -> None:
        self.before_attempt()

    def _response_received(self, exception: BaseException | None = None, **_: Any) -> None:
        self.after_attempt(exception)

    def before_attempt(self) -> None:
        """Refuse the attempt (StoreCircuitOpen) while the breaker is open or its half-open probe is out."""
        with self._lock:
            if self._failures < TRIP_AFTER:
                return None
            if self.clock() < self._open_until or self._probing:
                raise StoreCircuitOpen("the store did not answer the last attempts; not asking again yet")
            self._probing = True  # half-open: this attempt goes through, the others wait for its outcome
        return None

    def after_attempt(self, exception: BaseException | None) -> None:
        """Count the attempt's outcome: ``exception`` None for an answer of any kind."""
        if isinstance(exception, StoreCircuitOpen):
            return
        transport = exception is not None and _is_transport_failure(exception)
        with self._lock:
            self._probing = False
            if not transport:
                self._failures = 0
                return
            self._failures += 1
            if self._failures >= TRIP_AFTER:
                self._open_until = self.clock() + self.open_s


def _is_transport_failure(exc: BaseException) -> bool:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    return isinstance(exc, BotoConnectionError | HTTPClientError)

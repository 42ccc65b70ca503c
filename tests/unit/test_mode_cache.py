"""Open or keyed: the stored master key is read at most every MODE_CACHE_SEC, and once that old it is read again
off the request path. Given credentials whose mode was read a while ago and a store that takes its time, when a
request asks for the mode, then it is answered from the last read at once while one background read refreshes
it; past MODE_STALE_SEC the request reads it itself."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from isthmus.services.tenancy import credentials
from isthmus.services.tenancy.credentials import Credentials, Stores


@pytest.fixture(autouse=True)
def no_master_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)  # the mode comes from the store alone here


class SlowSettings:
    def __init__(self, value: str | None) -> None:
        self.value_now = value
        self.reads = 0
        self.release = threading.Event()

    def value(self, name: str) -> str | None:
        self.reads += 1
        self.release.wait(5)
        return self.value_now


def creds_over(settings: SlowSettings) -> Credentials:
    unused: Any = None  # only the settings store is read for the mode
    slow: Any = settings
    return Credentials(Stores(keys=unused, users=unused, budgets=unused, settings=slow, usage=unused,
                              pricing=unused, ratelimits=unused))


def test_a_stale_mode_answers_at_once_and_is_read_again_in_the_background() -> None:
    settings = SlowSettings(None)
    creds = creds_over(settings)
    creds._mode = (time.monotonic() - credentials.MODE_CACHE_SEC - 1, None)  # read 11 s ago: open

    async def scenario() -> tuple[bool, bool, int]:
        settings.value_now = "hash-of-a-master-key"  # meanwhile a master key was stored
        keyed_now = await asyncio.wait_for(creds.keyed(), 1)  # the store is blocked: this must not wait for it
        again = await asyncio.wait_for(creds.keyed(), 1)  # a second request does not start a second read
        settings.release.set()
        for _ in range(100):  # then the background read lands
            await asyncio.sleep(0.02)
            if creds._mode is not None and creds._mode[1] is not None:
                break
        return keyed_now, again, settings.reads

    keyed_now, again, reads = asyncio.run(scenario())
    assert (keyed_now, again, reads) == (False, False, 1)
    assert asyncio.run(creds.keyed()) is True


def test_past_the_stale_limit_a_request_reads_the_mode_itself() -> None:
    settings = SlowSettings("hash-of-a-master-key")
    settings.release.set()
    creds = creds_over(settings)
    creds._mode = (time.monotonic() - credentials.MODE_STALE_SEC - 1, None)
    assert asyncio.run(creds.keyed()) is True and settings.reads == 1

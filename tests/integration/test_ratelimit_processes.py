"""RPM limits hold across processes (each with its own boto3 client), like many Lambda instances."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest

from isthmus import wiring
from isthmus.services.tenancy.credentials import Credentials
from isthmus.services.tenancy.keys import CreateKey, KeyService

pytestmark = pytest.mark.integration


def test_rpm_limit_holds_across_4_processes(ddb_tables: str) -> None:
    # given a key limited to 25 requests per minute
    stores = wiring.stores()
    secret = KeyService(stores, Credentials(stores)).create(CreateKey(key_name="rl", rpm_limit=25))["key"]
    sys.path.insert(0, str(Path(__file__).parent))
    import ratelimit_worker

    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    env = {k: os.environ[k] for k in ("ISTHMUS_DYNAMODB_ENDPOINT", "ISTHMUS_TABLE_PREFIX")}
    now = time.time()
    # when 4 processes each try 20 requests at once in the same minute
    procs = [ctx.Process(target=ratelimit_worker.run, args=(env, secret, "free:model", 20, now, barrier, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    passed = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    # then at most 25 pass in total (exactly 25, as 80 tried), the rest got 429 with Retry-After
    assert sum(passed) == 25

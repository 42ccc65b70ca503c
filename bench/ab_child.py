"""One in-process round of bench/ab_edges.py, run with the measured tree's PYTHONPATH (nothing of this tree but this
file is imported): python ab_child.py KEY N CASES_JSON, CASES_JSON a list of [label, path, body]. Prints one line,
RESULT {label: [CPU us per request, Python calls per request]}. AB_PROFILE_DIR=D keeps each cell's profile in D;
AB_PROFILE_FIRST=1 profiles a stream only up to its first body byte (what its time to first byte costs)."""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
from typing import Any

import httpx


async def measure(key: str, n: int, cases: list[list[Any]]) -> dict[str, tuple[float, float]]:
    from local_runtime.edge.server import create_edge

    out: dict[str, tuple[float, float]] = {}
    edge = create_edge()
    first_only = bool(os.environ.get("AB_PROFILE_FIRST"))  # profile each stream only up to its first body byte
    profile = cProfile.Profile()
    on = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def first_byte(message: Any) -> None:
            nonlocal on
            if on and first_only and message["type"] == "http.response.body" and message.get("body"):
                profile.disable()
                on = False
            await send(message)

        await edge(scope, receive, first_byte)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge", timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        for label, path, body in cases:
            deadline = time.monotonic() + 60  # an agent pool answers once its node is in the edge's snapshot
            while (resp := await client.post(path, json=body)).status_code != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
            for _ in range(30):
                resp = await client.post(path, json=body)
                assert resp.status_code == 200, resp.text
            start = time.process_time()
            for _ in range(n):
                await client.post(path, json=body)
            cpu_us = (time.process_time() - start) / n * 1e6
            profile = cProfile.Profile()
            for _ in range(50):
                on = True
                profile.enable()
                await client.post(path, json=body)
                profile.disable()
                on = False
            if os.environ.get("AB_PROFILE_DIR"):  # keep each cell's profile for pstats / snakeviz
                profile.dump_stats(os.path.join(os.environ["AB_PROFILE_DIR"], label.replace(" ", "_") + ".prof"))
            out[label] = (cpu_us, pstats.Stats(profile).total_calls / 50)  # type: ignore[attr-defined]
    return out


if __name__ == "__main__":
    print("RESULT " + json.dumps(asyncio.run(measure(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])))))

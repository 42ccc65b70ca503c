"""One process of the rate-limit race (spawned by test_ratelimit_processes): its own boto3 client."""

from __future__ import annotations

import asyncio
import os
from typing import Any


def run(env: dict[str, str], secret: str, model: str, attempts: int, now: float, barrier: Any, out: Any) -> None:
    os.environ.update(env)
    from isthmus import wiring
    from isthmus.errors import ApiError

    gate = wiring.new_gate(clock=lambda: now)  # every process in the same minute bucket

    async def race() -> int:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        barrier.wait()
        passed = 0
        for _ in range(attempts):
            try:
                await gate.admit(principal, model=model, endpoint="/v1/chat/completions", input_tokens_estimate=1,
                                 max_output_tokens=1)
                passed += 1
            except ApiError as exc:
                assert exc.status == 429, exc.message
                assert exc.headers["Retry-After"] and exc.headers["X-RateLimit-Limit-Requests"]
        return passed

    out.put(asyncio.run(race()))

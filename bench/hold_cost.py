"""What a hold record costs on the non-lease (Lambda) path: a reservation and its settlement, without and with
the hold's own record (isthmus.adapters.holds_ddb), against DynamoDB Local, in one run.

- reserve: one conditional UpdateItem (before) vs a two-item TransactWriteItems (the update + the hold record);
- settle: the usage row + user update transaction (before) vs the same with the hold record's delete.

Prints per call: wall p50/p99 and this process's CPU (the gateway's own cost; DynamoDB Local's is not the real
store's, it runs at lower priority as in bench/gateway_overhead.py). Rounds alternate the two sides.

Run: .venv/bin/python bench/hold_cost.py [--n 300]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_overhead import local_store, pct  # noqa: E402

HOLD = Decimal("0.003")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    ddb = local_store(f"hc{uuid.uuid4().hex[:4]}-")
    try:
        from isthmus.adapters.ledger_ddb import DynamoUsageStore
        from isthmus.adapters.tenancy_ddb import DynamoUserStore
        from isthmus.ports.tenancy import Charge, HoldTag

        users, usage, user_id = DynamoUserStore(), DynamoUsageStore(), "bench-user"
        users.create_or_revive({"user_id": user_id, "spend": Decimal(0), "reserved": Decimal(0),
                                "max_budget": Decimal(10**6), "headroom": Decimal(10**6)})
        wall: dict[str, list[float]] = {k: [] for k in ("reserve", "reserve+record", "settle", "settle+record")}
        cpu: dict[str, list[float]] = {k: [] for k in wall}

        def timed(name: str, fn: object, *a: object) -> None:
            w, c = time.perf_counter(), time.process_time()
            assert fn(*a)  # type: ignore[operator]
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)

        for i in range(20 + args.n):
            for with_record in ((False, True) if i % 2 else (True, False)):
                admission = uuid.uuid4().hex
                tag = HoldTag(f"hold#{admission}", "bench", Decimal(str(time.time() + 60))) if with_record else None
                suffix = "+record" if with_record else ""
                timed("reserve" + suffix, users.reserve, user_id, HOLD, 2000, tag)
                row = {"id": admission, "user_id": user_id, "cost": HOLD, "timestamp": "2026-01-01T00:00:00Z",
                       "day": "2026-01-01", "model": "m", "status": "success", "endpoint": "e"}
                charge = Charge(user_id, cost=HOLD, hold=HOLD, tokens_held=2000, tokens_used=2000, requests_held=1,
                                hold_record=tag.record_id if tag else None)
                timed("settle" + suffix, usage.settle, row, charge)
            if i == 19:  # warm-up done
                for v in (*wall.values(), *cpu.values()):
                    v.clear()
        print(f"n={args.n} per side, DynamoDB Local (in memory, nice 10)")
        for name in wall:
            print(f"{name:15s} wall p50 {pct(wall[name], .5) * 1e3:6.2f} ms  p99 {pct(wall[name], .99) * 1e3:6.2f} ms"
                  f"  client CPU mean {statistics.mean(cpu[name]) * 1e3:5.2f} ms")
        for op in ("reserve", "settle"):
            extra = pct(wall[op + "+record"], .5) - pct(wall[op], .5)
            extra_cpu = statistics.mean(cpu[op + "+record"]) - statistics.mean(cpu[op])
            print(f"{op}: the hold record adds {extra * 1e3:+.2f} ms wall p50, {extra_cpu * 1e3:+.2f} ms client CPU")
        user = users.get(user_id)
        assert user is not None and user["reserved"] == 0, user
    finally:
        ddb.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

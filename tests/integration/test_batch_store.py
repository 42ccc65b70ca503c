"""The batch store and runner against DynamoDB Local (concurrency and persistence need the real store): a line is
claimed by one worker at a time, finished once, re-run only when its lease ran out; a runner that takes over a
dead worker's batch finishes it without running a finished line again; cancelling stops dispatch at once."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from isthmus.adapters.batches_table import DynamoBatchStore
from isthmus.services.batches.lines import Outcome
from isthmus.services.batches.model import ACTIVE, Batch
from isthmus.services.batches.runner import BatchRunner, Priority

pytestmark = pytest.mark.integration
MADE: list[str] = []


@pytest.fixture(autouse=True)
def _leave_nothing_running(ddb_tables: str) -> Iterator[None]:
    """Batches made here end failed: an edge started later in the session must not pick them up."""
    yield
    store = DynamoBatchStore()
    while MADE:
        store.transition(MADE.pop(), {"status": "failed"}, from_status=ACTIVE)


def a_batch(store: DynamoBatchStore, lines: int, owner: str = "u1", **fields: Any) -> Batch:
    batch = Batch(batch_id=f"batch_{uuid.uuid4().hex}", owner_id=owner, endpoint="/v1/chat/completions",
                  shape="otari", model="m", total=lines, expires_at=int(time.time()) + 3600, **fields)
    store.put_lines(batch.batch_id, [{"n": n, "custom_id": f"c{n}", "body": {"messages": []}} for n in range(lines)])
    store.put_batch(batch.model_dump())
    MADE.append(batch.batch_id)
    return batch


def test_one_claim_wins_and_a_line_finishes_once(ddb_tables: str) -> None:
    # given a batch of one line
    store = DynamoBatchStore()
    batch = a_batch(store, 1)
    now = time.time()
    # when eight workers claim it at once
    with ThreadPoolExecutor(8) as pool:
        claims = list(pool.map(lambda w: store.claim_line(batch.batch_id, 0, f"w{w}", now + 60, now), range(8)))
    # then exactly one holds it
    winners = [i for i, c in enumerate(claims) if c is not None]
    assert len(winners) == 1
    owner = f"w{winners[0]}"
    # and only the holder may finish it, once
    assert not store.finish_line(batch.batch_id, 0, "someone-else", {"x": 1}, ok=True)
    assert store.finish_line(batch.batch_id, 0, owner, {"x": 1}, ok=True)
    assert not store.finish_line(batch.batch_id, 0, owner, {"x": 2}, ok=True)
    # and a finished line is never claimed again, even long after its lease
    assert store.claim_line(batch.batch_id, 0, "late", time.time() + 60, time.time() + 3600) is None
    head = store.get_batch(batch.batch_id)
    assert head is not None and head["completed"] == 1 and head.get("failed", 0) == 0
    assert store.lines(batch.batch_id, 1)[0]["result"] == {"x": 1}


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(ddb_tables: str) -> None:
    # given a line leased by a worker that then died (its lease runs out)
    store = DynamoBatchStore()
    batch = a_batch(store, 1)
    now = time.time()
    assert store.claim_line(batch.batch_id, 0, "dead", now + 1, now) is not None
    assert store.claim_line(batch.batch_id, 0, "other", now + 60, now) is None  # live lease: not yet
    # when the lease has run out, another worker takes it
    taken = store.claim_line(batch.batch_id, 0, "other", now + 60, now + 2)
    # then it is the other's (second attempt), and the dead one's late answer is not recorded
    assert taken is not None and taken["attempts"] == 2
    assert not store.finish_line(batch.batch_id, 0, "dead", {"late": True}, ok=True)
    assert not store.renew_lease(batch.batch_id, 0, "dead", now + 60)
    assert store.finish_line(batch.batch_id, 0, "other", {"ok": True}, ok=False)
    head = store.get_batch(batch.batch_id)
    assert head is not None and head["failed"] == 1 and head.get("completed", 0) == 0


def test_counts_stay_exact_under_concurrent_finishes_and_owners_see_their_own(ddb_tables: str) -> None:
    # given 30 lines finished by 30 threads at once
    store = DynamoBatchStore()
    batch = a_batch(store, 30, owner=f"o-{uuid.uuid4().hex[:6]}")
    now = time.time()

    def run(n: int) -> bool:
        assert store.claim_line(batch.batch_id, n, f"w{n}", now + 60, now) is not None
        return store.finish_line(batch.batch_id, n, f"w{n}", {"n": n}, ok=n % 3 != 0)

    with ThreadPoolExecutor(10) as pool:
        assert all(pool.map(run, range(30)))
    # then the head counts every one exactly once
    head = store.get_batch(batch.batch_id)
    assert head is not None and (head["completed"], head["failed"]) == (20, 10)
    # and two racing transitions: one wins
    with ThreadPoolExecutor(4) as pool:
        moved = list(pool.map(lambda _: store.transition(batch.batch_id, {"status": "cancelling"},
                                                         from_status=("validating",)), range(4)))
    assert sum(m is not None for m in moved) == 1
    # and the owner's list pages newest first; another owner sees none of it
    second = a_batch(store, 1, owner=batch.owner_id)
    page, more = store.list_batches(batch.owner_id, after=None, limit=1)
    assert [b["batch_id"] for b in page] == [second.batch_id] and more
    page, more = store.list_batches(batch.owner_id, after=second.batch_id, limit=5)
    assert [b["batch_id"] for b in page] == [batch.batch_id] and not more
    assert store.list_batches("nobody", after=None, limit=5) == ([], False)


class CountingLines:
    """A line runner that answers after ``delay`` and counts what it ran (per custom_id)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.ran: list[str] = []

    async def run(self, batch: Batch, body: dict[str, Any], request_id: str) -> Outcome:
        await asyncio.sleep(self.delay)
        self.ran.append(request_id)
        return Outcome(200, {"id": request_id})


def runner(store: DynamoBatchStore, lines: CountingLines, worker: str, lease_s: float = 60.0) -> BatchRunner:
    r = BatchRunner(store, lines, None, Priority(per_model=2, busy=lambda: False), worker=worker)  # type: ignore[arg-type]
    r.lease_s = lease_s
    return r


def test_a_runner_takes_over_a_dead_workers_batch_without_rerunning_finished_lines(ddb_tables: str) -> None:
    # given a batch in progress: line 0 finished, line 1 leased by a worker that died, lines 2-5 untouched
    store = DynamoBatchStore()
    batch = a_batch(store, 6)
    store.transition(batch.batch_id, {"status": "in_progress"}, from_status=("validating",))
    now = time.time()
    store.claim_line(batch.batch_id, 0, "dead", now + 60, now)
    store.finish_line(batch.batch_id, 0, "dead", {"custom_id": "c0"}, ok=True)
    store.claim_line(batch.batch_id, 1, "dead", now + 1.5, now)
    # when a new runner runs the batch
    lines = CountingLines()
    finished = asyncio.run(runner(store, lines, "new", lease_s=2.0).run(batch.batch_id))
    # then the batch completes, line 0 never ran again, line 1 ran once its lease was out, each line once
    head = store.get_batch(batch.batch_id)
    assert finished and head is not None and head["status"] == "completed" and head["completed"] == 6
    assert sorted(lines.ran) == sorted(f"{batch.batch_id}#{n}" for n in range(1, 6))
    assert head["finalizing_at"] and head["completed_at"] and head["finishing_as"] == "completed"


def test_cancel_stops_dispatch_and_keeps_what_finished(ddb_tables: str) -> None:
    # given a batch of 12 slow lines running two at a time
    store = DynamoBatchStore()
    batch = a_batch(store, 12)
    store.transition(batch.batch_id, {"status": "in_progress"}, from_status=("validating",))
    lines = CountingLines(delay=0.3)

    async def scenario() -> None:
        run = asyncio.create_task(runner(store, lines, "w").run(batch.batch_id))
        while len(lines.ran) < 2:
            await asyncio.sleep(0.02)
        # when it is cancelled mid-way
        store.transition(batch.batch_id, {"status": "cancelling"}, from_status=("in_progress",))
        await asyncio.wait_for(run, 30)

    asyncio.run(scenario())
    # then it ends cancelled with the lines that finished, and no new line started after the cancel
    head = store.get_batch(batch.batch_id)
    assert head is not None and head["status"] == "cancelled" and head["cancelled_at"]
    assert 2 <= head["completed"] <= 4 < 12
    assert head["completed"] == len(lines.ran)


def test_batches_made_in_the_same_second_list_newest_first(ddb_tables: str) -> None:
    # given five batches of one owner, all stamped with the same second
    store = DynamoBatchStore()
    owner, second = f"o-{uuid.uuid4().hex[:6]}", int(time.time())
    made = [a_batch(store, 1, owner=owner, created_at=second).batch_id for _ in range(5)]
    # when the owner lists them a page of two at a time
    first, more = store.list_batches(owner, after=None, limit=2)
    rest, _ = store.list_batches(owner, after=first[-1]["batch_id"], limit=5)
    # then they come newest first, in the order they were made (not by their random ids)
    assert more and [b["batch_id"] for b in first + rest] == made[::-1]

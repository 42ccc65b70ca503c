"""SQS consumer (template: BatchWorkerFunction): runs the batch named by each message (its body is the batch id)
with the engine a local edge runs in-process (isthmus.services.batches.runner). A batch that outlasts the invoke
is stopped ``STOP_BEFORE_END_S`` before the Lambda timeout (the lines running then finish first) and sent to the
queue again, so the next invoke goes on where this one stopped; its finished lines are never run again. A message
whose run failed is reported back (ReportBatchItemFailures) and comes again after the visibility timeout."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from isthmus import init_parts, lambda_init, wiring
from isthmus.adapters.batch_queue import SqsBatchQueue, queue_url
from isthmus.observability import get_logger

log = get_logger("batch-worker")
# Lambda init: the store and S3 clients and the batch engine (the inference service, its gate and routing)
lambda_init.prepare(init_parts.prepare_files, wiring.new_batch_runner)
STOP_BEFORE_END_S = 120.0  # room for the last lines to finish and the message to be sent again


_requeue_delay_s: dict[str, int] = {}  # a batch waiting on its provider's batch API comes again this much later


async def run_for(batch_id: str, seconds: float) -> bool:
    """Runs the batch for at most ``seconds`` of dispatch; True when it has nothing left to run."""
    runner = wiring.new_batch_runner()
    done = await runner.run(batch_id, deadline=time.monotonic() + max(1.0, seconds))
    _requeue_delay_s[batch_id] = runner.requeue_delay_s
    return done


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    failures = []
    for record in event.get("Records", []):
        batch_id = str(record.get("body") or "").strip()
        try:
            left = context.get_remaining_time_in_millis() / 1000 - STOP_BEFORE_END_S
            if not asyncio.run(run_for(batch_id, left)):
                url = queue_url()
                if url is None:
                    raise RuntimeError("the batch outlasted the invoke and no batch queue is configured")
                SqsBatchQueue(url).send(batch_id, _requeue_delay_s.pop(batch_id, 0))
        except Exception as exc:
            log.warning("batch not run to its end; the message comes again",
                        extra={"batch_id": batch_id, "error": type(exc).__name__})
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}

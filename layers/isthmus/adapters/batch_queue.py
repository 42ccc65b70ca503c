"""The batch queue (SQS): one message per batch to run, its body the batch id; the template's
BatchWorkerFunction consumes it (functions/batch_worker/worker.py), and sends it again to go on with a batch
that outlasts one invoke."""

from __future__ import annotations

import os

from isthmus.adapters.settlement_queue import _client


def queue_url() -> str | None:
    """The queue's URL (the template's !Ref); the local edge resolves that Ref to a bare name: no queue."""
    url = os.environ.get("ISTHMUS_BATCH_QUEUE_URL") or ""
    return url if url.startswith(("https://", "http://")) else None


class SqsBatchQueue:
    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, batch_id: str, delay_s: int = 0) -> None:
        _client().send_message(QueueUrl=self.url, MessageBody=batch_id, DelaySeconds=max(0, min(900, delay_s)))

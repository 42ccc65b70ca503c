"""The settlements dead-letter queue (SQS): where a Lambda sandbox sends settlements the store would not take
within the invoke. One message per settlement, its body the spool's JSON form (isthmus.services.tenancy.spool); the
template's SettlementReplayFunction consumes them (functions/settlement_replay/replay.py)."""

from __future__ import annotations

import os
import threading
from typing import Any

from isthmus import settings
from isthmus.adapters import aws
from isthmus.services.tenancy.spool import dumps

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def queue_url() -> str | None:
    """The queue's URL (the template's !Ref); the local edge resolves that Ref to a bare name: no queue."""
    url = os.environ.get("ISTHMUS_SETTLEMENT_DLQ_URL") or ""
    return url if url.startswith(("https://", "http://")) else None


def _client() -> Any:
    with _lock:
        if "sqs" not in _clients:
            kwargs: dict[str, Any] = {"region_name": settings.region()}
            if endpoint := os.environ.get("ISTHMUS_SQS_ENDPOINT"):
                kwargs.update(endpoint_url=endpoint, aws_access_key_id="local", aws_secret_access_key="local")
            _clients["sqs"] = aws.client("sqs", **kwargs)
        return _clients["sqs"]


class SqsDeadLetter:
    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, entries: list[dict[str, Any]]) -> None:
        for start in range(0, len(entries), 10):
            chunk = entries[start:start + 10]
            out = _client().send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(i), "MessageBody": dumps(entry)} for i, entry in enumerate(chunk)])
            if out.get("Failed"):
                raise RuntimeError(f"{len(out['Failed'])} settlements could not be dead-lettered")

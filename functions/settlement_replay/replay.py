"""SQS consumer (template: SettlementReplayFunction): dead-lettered settlements written now, each exactly once
(the settlement transaction is keyed by the usage row's id). A message whose settlement still fails is reported
back (ReportBatchItemFailures) and comes again after the visibility timeout."""

from __future__ import annotations

from typing import Any

from isthmus import lambda_init, wiring
from isthmus.observability import get_logger
from isthmus.services.tenancy.settlements import replay_entry
from isthmus.services.tenancy.spool import loads

log = get_logger("settlement-replay")
lambda_init.prepare(wiring.stores)  # Lambda init: the store client and the usage store


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    usage = wiring.stores().usage
    failures = []
    for record in event.get("Records", []):
        try:
            replay_entry(usage, loads(record["body"]))
        except Exception as exc:
            log.warning("dead-lettered settlement not replayed yet", extra={"error": type(exc).__name__})
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}

"""Scheduled Lambda (template: HoldsSweeperFunction, every minute): expired holds and leases of dead processes
go back to their users' headroom (isthmus.services.tenancy.holds.sweep_once)."""

from __future__ import annotations

from typing import Any

from isthmus import lambda_init
from isthmus.adapters.holds_ddb import DynamoHoldStore
from isthmus.services.tenancy.holds import sweep_once

lambda_init.prepare()  # Lambda init: the store client


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    return {"reclaimed": sweep_once(DynamoHoldStore())}

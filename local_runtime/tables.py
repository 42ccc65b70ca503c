"""Creates the template's DynamoDB tables on a local engine (DynamoDB Local, Alternator), idempotently."""

from __future__ import annotations

from typing import Any

from isthmus import settings
from local_runtime.template import load_template, table_logical_ids


def table_requests(template: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """(CreateTable kwargs, TTL attribute) for every AWS::DynamoDB::Table in the template."""
    out = []
    for lid, name in table_logical_ids(template).items():
        props = template["Resources"][lid]["Properties"]
        kwargs: dict[str, Any] = {
            "TableName": settings.table_name(name),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        ttl = props.get("TimeToLiveSpecification", {})
        out.append((kwargs, ttl.get("AttributeName") if ttl.get("Enabled") else None))
    return out


def create_tables(client: Any, template: dict[str, Any] | None = None) -> list[str]:
    """Create whatever table is missing; returns the names created (empty when all existed)."""
    template = template or load_template()
    existing: set[str] = set()
    for page in client.get_paginator("list_tables").paginate():
        existing.update(page["TableNames"])
    created = []
    for kwargs, ttl_attr in table_requests(template):
        name = kwargs["TableName"]
        if name in existing:
            continue
        try:
            client.create_table(**kwargs)
        except client.exceptions.ResourceInUseException:
            continue  # created concurrently by another process: same definition, fine
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
        if ttl_attr:
            client.update_time_to_live(TableName=name,
                                       TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attr})
        created.append(name)
    return created

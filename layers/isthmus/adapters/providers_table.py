"""ProviderStore over the ``providers`` table: ``provider_id`` plain, the record as a JSON document (its
api_key only as the sealed envelope the service hands over). Blocking: async callers use a thread pool."""

from __future__ import annotations

import json
from typing import Any

from isthmus import settings
from isthmus.adapters import dynamodb


class DynamoProviderStore:
    @property
    def ddb(self) -> Any:
        return dynamodb.client()

    @staticmethod
    def _table() -> str:
        return settings.table_name("providers")

    @staticmethod
    def _record(item: dict[str, Any]) -> dict[str, Any]:
        return {**json.loads(item.get("record", {}).get("S", "{}")), "provider_id": item["provider_id"]["S"]}

    def get(self, provider_id: str) -> dict[str, Any] | None:
        item = self.ddb.get_item(TableName=self._table(), Key={"provider_id": {"S": provider_id}},
                                 ConsistentRead=True).get("Item")
        return self._record(item) if item else None

    def list_all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for page in self.ddb.get_paginator("scan").paginate(TableName=self._table(), ConsistentRead=True):
            items += page.get("Items", [])
        return sorted((self._record(i) for i in items), key=lambda r: r["provider_id"])

    def put(self, record: dict[str, Any]) -> None:
        body = {k: v for k, v in record.items() if k != "provider_id"}
        self.ddb.put_item(TableName=self._table(), Item={"provider_id": {"S": record["provider_id"]},
                                                         "record": {"S": json.dumps(body, sort_keys=True)}})

    def delete(self, provider_id: str) -> bool:
        resp = self.ddb.delete_item(TableName=self._table(), Key={"provider_id": {"S": provider_id}},
                                    ReturnValues="ALL_OLD")
        return bool(resp.get("Attributes"))

"""ResponseStore over the responses table. Items expire by TTL, and expired ones are also filtered on read
(no engine deletes expired items on time)."""

from __future__ import annotations

import os
import time

from starlette.concurrency import run_in_threadpool

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.ports.responses import StoredResponse


def _ttl_seconds() -> int:
    return int(os.environ.get("ISTHMUS_RESPONSES_TTL_SECONDS", str(30 * 24 * 3600)))


class DynamoResponseStore:
    def __init__(self) -> None:
        self.table = settings.table_name("responses")

    async def get(self, response_id: str) -> StoredResponse | None:
        item = await run_in_threadpool(
            lambda: dynamodb.client().get_item(TableName=self.table, Key={"response_id": {"S": response_id}})
        )
        found = item.get("Item")
        if not found or int(found["expires_at_epoch"]["N"]) <= time.time():
            return None
        return StoredResponse.model_validate_json(found["doc"]["S"])

    async def put(self, stored: StoredResponse) -> None:
        item = {
            "response_id": {"S": stored.response_id},
            "doc": {"S": stored.model_dump_json(exclude_none=True)},
            "expires_at_epoch": {"N": str(int(time.time()) + _ttl_seconds())},
        }
        await run_in_threadpool(lambda: dynamodb.client().put_item(TableName=self.table, Item=item))

    async def delete(self, response_id: str) -> bool:
        out = await run_in_threadpool(
            lambda: dynamodb.client().delete_item(TableName=self.table, Key={"response_id": {"S": response_id}},
                                                  ReturnValues="ALL_OLD")
        )
        return "Attributes" in out

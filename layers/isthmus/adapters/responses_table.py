"""ResponseStore over the responses table. Items expire by TTL, and expired ones are also filtered on read
(no engine deletes expired items on time).

A stored conversation grows with every ``previous_response_id`` turn and may outgrow DynamoDB's 400 KB item
limit; it is written after the answer was generated, so its size must never make the write fail. The document
is stored compressed (zlib) and, when still too big for one item, split into parts of ``PART_BYTES``: the
parts are written first under ``<response_id>#<n>``, the head item (``response_id``, the first part and the
part count) last, so a response is never visible before it is whole. Items stored before this (an
uncompressed ``doc``) are still read.
"""

from __future__ import annotations

import os
import time
import zlib
from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.ports.responses import StoredResponse

PART_BYTES = 350_000  # under the 400 KB item limit with the key, the part count and the TTL attribute


def _ttl_seconds() -> int:
    return int(os.environ.get("ISTHMUS_RESPONSES_TTL_SECONDS", str(30 * 24 * 3600)))


def _key(response_id: str, part: int = 0) -> dict[str, Any]:
    return {"response_id": {"S": f"{response_id}#{part}" if part else response_id}}


class DynamoResponseStore:
    def __init__(self) -> None:
        self.table = settings.table_name("responses")

    async def get(self, response_id: str) -> StoredResponse | None:
        return await run_in_threadpool(self._get, response_id)

    async def put(self, stored: StoredResponse) -> None:
        await run_in_threadpool(self._put, stored)

    async def delete(self, response_id: str) -> bool:
        return await run_in_threadpool(self._delete, response_id)

    def _get(self, response_id: str) -> StoredResponse | None:
        head = dynamodb.client().get_item(TableName=self.table, Key=_key(response_id)).get("Item")
        if not head or int(head["expires_at_epoch"]["N"]) <= time.time():
            return None
        if "doc" in head:
            return StoredResponse.model_validate_json(head["doc"]["S"])
        if "doc_z" not in head:  # a part item, not a response
            return None
        blob = [head["doc_z"]["B"]]
        for part in range(1, int(head["parts"]["N"])):
            item = dynamodb.client().get_item(TableName=self.table, Key=_key(response_id, part)).get("Item")
            if not item:
                return None
            blob.append(item["part"]["B"])
        return StoredResponse.model_validate_json(zlib.decompress(b"".join(blob)))

    def _put(self, stored: StoredResponse) -> None:
        blob = zlib.compress(stored.model_dump_json(exclude_none=True).encode())
        parts = [blob[i:i + PART_BYTES] for i in range(0, len(blob), PART_BYTES)]
        expires = {"N": str(int(time.time()) + _ttl_seconds())}
        for n, part in enumerate(parts[1:], start=1):
            dynamodb.client().put_item(TableName=self.table, Item={
                **_key(stored.response_id, n), "part": {"B": part}, "expires_at_epoch": expires})
        dynamodb.client().put_item(TableName=self.table, Item={
            **_key(stored.response_id), "doc_z": {"B": parts[0]}, "parts": {"N": str(len(parts))},
            "expires_at_epoch": expires})

    def _delete(self, response_id: str) -> bool:
        client = dynamodb.client()
        try:
            out = client.delete_item(TableName=self.table, Key=_key(response_id), ReturnValues="ALL_OLD",
                                     ConditionExpression="attribute_exists(doc) OR attribute_exists(doc_z)")
        except client.exceptions.ConditionalCheckFailedException:
            return False
        for part in range(1, int(out["Attributes"].get("parts", {}).get("N", "1"))):
            client.delete_item(TableName=self.table, Key=_key(response_id, part))
        return True

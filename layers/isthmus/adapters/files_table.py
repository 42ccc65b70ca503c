"""FileMetaStore over the DynamoDB ``files`` table (template.yaml's FilesTable).

Key ``file_id``; the GSI ``by_owner`` (owner_id, created_at) lists one user's files in time order. Its range key
``created_at`` is a string: zero-padded unix seconds, the write's nanosecond clock and the file id, so files of the
same second still list in upload order and a page can start right after any file (the ``after`` cursor). The
record's own seconds are kept in ``created_at_epoch``. ``expires_at_epoch`` is the TTL attribute; expired rows
are filtered by the service (no engine deletes them on time). The master's listing (every owner) is a scan sorted
in memory: an admin view, bounded by the number of files.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from starlette.concurrency import run_in_threadpool

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import from_item, is_conditional_failure, scan_all, to_item, values
from isthmus.ports.files import FileRecord

INDEX = "by_owner"


def sort_key(created_at: int, file_id: str) -> str:
    return f"{created_at:012d}#{time.time_ns():020d}#{file_id}"


def _item(record: FileRecord) -> dict[str, Any]:
    return to_item({
        "file_id": record.file_id, "owner_id": record.owner_id, "filename": record.filename,
        "purpose": record.purpose, "content_type": record.content_type, "size": record.size,
        "created_at": sort_key(record.created_at, record.file_id), "created_at_epoch": record.created_at,
        "expires_at_epoch": record.expires_at, "sha256": record.sha256})


def _record(item: dict[str, Any]) -> FileRecord:
    expires = item.get("expires_at_epoch")
    return FileRecord(file_id=item["file_id"], owner_id=item["owner_id"], filename=item["filename"],
                      purpose=item["purpose"], content_type=item["content_type"], size=int(item["size"]),
                      created_at=int(item["created_at_epoch"]), sha256=item.get("sha256", ""),
                      expires_at=int(expires) if expires is not None else None)


class DynamoFileMetaStore:
    def __init__(self) -> None:
        self.table = settings.table_name("files")

    async def put(self, record: FileRecord) -> None:
        await run_in_threadpool(self._put, record)

    async def get(self, file_id: str) -> FileRecord | None:
        return await run_in_threadpool(self._get, file_id)

    async def list_for_owner(self, owner_id: str | None, *, purpose: str | None, limit: int, after: str | None,
                             order: Literal["asc", "desc"]) -> tuple[list[FileRecord], bool]:
        return await run_in_threadpool(self._list, owner_id, purpose, limit, after, order)

    async def delete(self, file_id: str) -> bool:
        return await run_in_threadpool(self._delete, file_id)

    def _put(self, record: FileRecord) -> None:
        # ids are random; the condition only makes a (practically impossible) collision an error, not an overwrite
        dynamodb.client().put_item(TableName=self.table, Item=_item(record),
                                   ConditionExpression="attribute_not_exists(file_id)")

    def _get(self, file_id: str) -> FileRecord | None:
        item = self._get_item(file_id)
        return _record(item) if item else None

    def _get_item(self, file_id: str) -> dict[str, Any] | None:
        return from_item(dynamodb.client().get_item(TableName=self.table, Key={"file_id": {"S": file_id}},
                                                    ConsistentRead=True).get("Item"))

    def _list(self, owner_id: str | None, purpose: str | None, limit: int, after: str | None,
              order: Literal["asc", "desc"]) -> tuple[list[FileRecord], bool]:
        start = self._get_item(after) if after else None
        start_key: str | None = start["created_at"] if start else None
        if owner_id is None:
            return self._list_all(purpose, limit, start_key, order)
        condition = "owner_id = :o"
        bind: dict[str, Any] = {":o": owner_id}
        if start_key:
            condition += " AND created_at " + (">" if order == "asc" else "<") + " :s"
            bind[":s"] = start_key
        kwargs: dict[str, Any] = {"IndexName": INDEX, "KeyConditionExpression": condition,
                                  "ScanIndexForward": order == "asc"}
        if purpose:
            kwargs["FilterExpression"] = "purpose = :p"
            bind[":p"] = purpose
        kwargs["ExpressionAttributeValues"] = values(bind)
        page: list[FileRecord] = []
        client = dynamodb.client()
        while True:  # a filter can leave a DynamoDB page short: read on until one more than the page is known
            out = client.query(TableName=self.table, Limit=min(1000, limit + 1), **kwargs)
            for raw in out.get("Items", []):
                item = from_item(raw)
                assert item is not None
                page.append(_record(item))
                if len(page) > limit:
                    return page[:limit], True
            if "LastEvaluatedKey" not in out:
                return page, False
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def _list_all(self, purpose: str | None, limit: int, start_key: str | None,
                  order: Literal["asc", "desc"]) -> tuple[list[FileRecord], bool]:
        items = [item for item in scan_all(dynamodb.client(), self.table)
                 if purpose is None or item.get("purpose") == purpose]
        items.sort(key=lambda item: str(item["created_at"]), reverse=order == "desc")
        if start_key:
            items = [item for item in items if item["created_at"] != start_key
                     and (item["created_at"] > start_key) == (order == "asc")]
        return [_record(item) for item in items[:limit]], len(items) > limit

    def _delete(self, file_id: str) -> bool:
        client = dynamodb.client()
        try:
            client.delete_item(TableName=self.table, Key={"file_id": {"S": file_id}},
                               ConditionExpression="attribute_exists(file_id)")
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

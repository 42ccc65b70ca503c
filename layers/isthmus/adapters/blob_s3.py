"""BlobStore on S3 (the template's FilesBucket, ``ISTHMUS_FILES_BUCKET``), through the low-level botocore client.

Every object is written with server-side encryption (AES256), never presigned: the gateway is the only reader.
Uploads stream: the body is cut into parts of ``PART_BYTES`` (8 MiB) as it arrives; a body that ends within the
first part is one PutObject, a longer one a multipart upload sent part by part, so at most one part is held in
memory. On any failure (over the size limit, a broken client stream, S3 refusing a part) the multipart upload is
aborted, so nothing of the body is kept or billed. ``ISTHMUS_S3_ENDPOINT`` points at another S3-protocol server
(tests: s3rver on loopback); botocore calls run in worker threads.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from anyio import to_thread

from isthmus import settings
from isthmus.adapters import aws
from isthmus.ports.files import FileNotFound, FileTooLarge

PART_BYTES = 8 * 1024 * 1024  # S3's minimum part is 5 MiB (all but the last)
READ_CHUNK = 1024 * 1024
ENCRYPTION = "AES256"

_lock = threading.Lock()
_clients: dict[str | None, Any] = {}


def s3_client() -> Any:
    """A cached S3 client (one per endpoint). Its read timeout is longer than the DynamoDB one: a part is 8 MiB."""
    endpoint = os.environ.get("ISTHMUS_S3_ENDPOINT") or None
    with _lock:
        if endpoint not in _clients:
            # cold start: botocore only on the first S3 call
            from botocore.config import Config

            connect_s, _read_s, attempts = aws.call_limits()
            config = Config(connect_timeout=connect_s, read_timeout=60, s3={"addressing_style": "path"},
                            retries={"total_max_attempts": attempts, "mode": "standard"})
            kwargs: dict[str, Any] = {"region_name": settings.region(), "config": config}
            if endpoint:
                kwargs["endpoint_url"] = endpoint
            _clients[endpoint] = aws.client("s3", **kwargs)
        return _clients[endpoint]


def reset_clients() -> None:
    with _lock:
        _clients.clear()


class S3BlobStore:
    def __init__(self, bucket: str, *, prefix: str = "files/") -> None:
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str,
                  max_bytes: int) -> tuple[int, str]:
        client = s3_client()
        object_key = self._key(key)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(max_bytes)
                digest.update(chunk)
                buffer += chunk
                while len(buffer) >= PART_BYTES:
                    if upload_id is None:
                        upload_id = (await to_thread.run_sync(lambda: client.create_multipart_upload(
                            Bucket=self.bucket, Key=object_key, ContentType=content_type,
                            ServerSideEncryption=ENCRYPTION)))["UploadId"]
                    part = bytes(buffer[:PART_BYTES])
                    del buffer[:PART_BYTES]
                    parts.append(await self._upload_part(client, object_key, upload_id, len(parts) + 1, part))
            if upload_id is None:
                body = bytes(buffer)
                await to_thread.run_sync(lambda: client.put_object(
                    Bucket=self.bucket, Key=object_key, Body=body, ContentType=content_type,
                    ServerSideEncryption=ENCRYPTION))
            else:
                if buffer or not parts:
                    parts.append(await self._upload_part(client, object_key, upload_id, len(parts) + 1,
                                                         bytes(buffer)))
                done_id = upload_id
                await to_thread.run_sync(lambda: client.complete_multipart_upload(
                    Bucket=self.bucket, Key=object_key, UploadId=done_id, MultipartUpload={"Parts": parts}))
        except BaseException:
            if upload_id is not None:
                await self._abort(client, object_key, upload_id)
            raise
        return size, digest.hexdigest()

    async def _upload_part(self, client: Any, object_key: str, upload_id: str, number: int,
                           body: bytes) -> dict[str, Any]:
        out = await to_thread.run_sync(lambda: client.upload_part(
            Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=body))
        return {"ETag": out["ETag"], "PartNumber": number}

    async def _abort(self, client: Any, object_key: str, upload_id: str) -> None:
        try:
            await to_thread.run_sync(lambda: client.abort_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id))
        except Exception:  # the bucket's lifecycle rule for stale multipart uploads is the backstop
            return

    async def get(self, key: str) -> AsyncIterator[bytes]:
        client = s3_client()
        object_key = self._key(key)
        try:
            out = await to_thread.run_sync(lambda: client.get_object(Bucket=self.bucket, Key=object_key))
        except client.exceptions.NoSuchKey:
            raise FileNotFound(key) from None
        body = out["Body"]
        try:
            while chunk := await to_thread.run_sync(body.read, READ_CHUNK):
                yield chunk
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        client = s3_client()
        object_key = self._key(key)
        await to_thread.run_sync(lambda: client.delete_object(Bucket=self.bucket, Key=object_key))

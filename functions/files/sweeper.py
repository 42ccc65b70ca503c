"""Scheduled Lambda (template: FilesSweeperFunction, hourly): expired files nobody read since lose their row and
their bytes (isthmus.services.files.FileService.sweep_expired). The table's TTL would drop the row alone and leave
the S3 object behind."""

from __future__ import annotations

import asyncio
from typing import Any

from isthmus import init_parts, lambda_init, wiring

lambda_init.prepare(init_parts.prepare_files)  # Lambda init: the store and S3 clients, the files service


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    return {"swept": asyncio.run(wiring.file_access().sweep_expired())}

"""ResponseStore in process memory: for single-Mac mode, where there is no DynamoDB. Bounded (LRU) and
expiring, like the table."""

from __future__ import annotations

import time
from collections import OrderedDict

from isthmus.ports.responses import StoredResponse


class MemoryResponseStore:
    def __init__(self, max_items: int = 1000, ttl_s: float = 24 * 3600) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, StoredResponse]] = OrderedDict()

    async def get(self, response_id: str) -> StoredResponse | None:
        found = self._items.get(response_id)
        if found is None or found[0] <= time.monotonic():
            self._items.pop(response_id, None)
            return None
        self._items.move_to_end(response_id)
        return found[1]

    async def put(self, stored: StoredResponse) -> None:
        self._items[stored.response_id] = (time.monotonic() + self.ttl_s, stored)
        self._items.move_to_end(stored.response_id)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    async def delete(self, response_id: str) -> bool:
        return self._items.pop(response_id, None) is not None

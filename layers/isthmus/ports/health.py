from __future__ import annotations

from typing import Protocol


class StoreProbe(Protocol):
    """Tells whether the metadata store answers and holds the tables the gateway needs."""

    def problems(self) -> list[str]:
        """An empty list when healthy; otherwise one human-readable line per problem."""
        ...

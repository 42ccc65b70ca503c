"""Progress of a model load, measured as it happens: mlx-lm builds the model over lazily mapped weights, then
the weights are materialized one layer at a time, each group's bytes counted once it is in memory.

The engine thread writes a :class:`LoadProgress`; HTTP handlers read it (plain ints and strings, replaced
whole, so a reader never sees a torn value that matters: at worst a count one group behind).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

LoadState = Literal["loading", "done", "failed"]
_LAYER = re.compile(r"^(.*?layers\.\d+)\.")


@dataclass
class LoadProgress:
    model: str
    state: LoadState = "loading"
    # "preparing" (mlx-lm, the config, the tokenizer, the lazily mapped weights) then "weights" (materialized layer
    # by layer: what the byte counts measure, and what takes the time for a large model read from disk)
    phase: str = "preparing"
    layers_done: int = 0
    layers_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    error: str | None = None
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    load_s: float | None = None
    _started: float = field(default_factory=time.monotonic, repr=False)

    def finish(self, error: str | None = None) -> None:
        self.load_s = round(time.monotonic() - self._started, 3)
        if error is None:
            self.layers_done, self.bytes_done = self.layers_total, self.bytes_total
        self.error = error
        self.state = "failed" if error else "done"
        self.phase = self.state

    def view(self) -> dict[str, Any]:
        return {"model": self.model, "state": self.state, "phase": self.phase, "layers_done": self.layers_done,
                "layers_total": self.layers_total, "bytes_done": self.bytes_done, "bytes_total": self.bytes_total,
                "error": self.error, "started_at": self.started_at, "load_s": self.load_s}


def layer_groups(parameters: list[tuple[str, Any]]) -> list[list[tuple[str, Any]]]:
    """Parameters grouped by transformer layer (``...layers.N.``), in order; everything else (embeddings, the
    final norm, the head) is one group of its own at the end."""
    groups: dict[str, list[tuple[str, Any]]] = {}
    rest: list[tuple[str, Any]] = []
    for name, value in parameters:
        match = _LAYER.match(name)
        if match:
            groups.setdefault(match.group(1), []).append((name, value))
        else:
            rest.append((name, value))
    ordered = list(groups.values())
    return [*ordered, rest] if rest else ordered


def materialize(model: Any, progress: LoadProgress) -> None:
    """Evaluate a lazily loaded model's weights group by group, counting layers and bytes into ``progress``."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    flat: list[tuple[str, Any]] = tree_flatten(model.parameters())  # type: ignore[assignment]
    groups = layer_groups(flat)
    progress.layers_total = len(groups)
    progress.bytes_total = sum(int(v.nbytes) for g in groups for _, v in g)
    progress.phase = "weights"
    for group in groups:
        mx.eval([v for _, v in group])
        progress.bytes_done += sum(int(v.nbytes) for _, v in group)
        progress.layers_done += 1

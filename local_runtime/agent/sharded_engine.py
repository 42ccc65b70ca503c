"""The engine's part in a sharded load (see :mod:`local_runtime.agent.sharding`): join the group, load this
rank's part, then either serve as rank 0 (a :class:`ShardedHead` as the model, with continuous batching and
the session prefix cache as on one node) or run the follower loop on the engine thread until rank 0 stops it
or the group breaks."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isthmus_contracts.agent import ShardSpec

log = logging.getLogger("isthmus.agent.engine")


class ShardedEngine:
    _commands: queue.Queue[Callable[[], None]]
    _head: Any
    _solo_ok: bool
    _generator: Any
    loaded: Any
    shard: dict[str, Any] | None
    shard_error: str | None
    restart_due: bool

    # provided by Engine
    def _unload(self) -> None:
        raise NotImplementedError

    def _fail_all(self, message: str, status: int, code: str = "backend_error") -> None:
        raise NotImplementedError

    def _loaded_model(self, name: str, path: Path, model: Any, tokenizer: Any) -> Any:
        raise NotImplementedError

    def _new_generator(self) -> Any:
        raise NotImplementedError

    def _load_shard(self, name: str, path: Path, spec: ShardSpec) -> Any:
        from local_runtime.agent import sharding
        from local_runtime.agent.shard_head import ShardedHead

        try:
            group = sharding.init_group(spec)  # returns once every rank has joined
            model = sharding.load_shard(str(path), spec, group)
        except Exception:
            self.restart_due = True  # a half-made group may hold sockets and mlx's group slot
            raise
        self.shard = {"model": name, "mode": spec.mode, "rank": spec.rank, "size": spec.size,
                      "backend": spec.backend, "role": "follower" if spec.rank else "head",
                      "param_bytes": sharding.parameter_bytes(model),
                      # head: the most sequences one forward pass served; followers: passes run, caches held
                      **({"forward_passes": 0, "sequences_held": 0} if spec.rank else {"batch_rows_peak": 0})}
        if spec.rank:  # a follower: its loop owns the engine thread until rank 0 stops it or is lost
            self._commands.put(lambda: self._follow(model, spec, group))
            return None
        self._head = ShardedHead(model, spec, group)
        self.loaded = self._loaded_model(name, path, self._head, sharding.load_tokenizer(str(path)))
        self._solo_ok = True
        self._generator = self._new_generator()
        log.info("loaded rank 0 of %s (%s over %d nodes)", name, spec.mode, spec.size)
        return self.loaded

    def _follow(self, model: Any, spec: ShardSpec, group: Any) -> None:
        from local_runtime.agent.shard_follower import follow

        try:
            passes = follow(model, spec, group, self.shard)
            log.info("rank %d stopped by rank 0 after %d forward passes", spec.rank, passes)
        except Exception as exc:
            self.shard_error = f"rank {spec.rank} left the group: {exc}"
            log.warning("%s", self.shard_error)
        finally:
            self.shard = None
            del model
            self._unload()
            self.restart_due = True

    def _shard_lost(self, exc: Exception) -> None:
        """Rank 0's forward pass failed: the followers are out of step (or gone), so the group cannot go on.
        The running request ends with an error event, the model is dropped, the status says why."""
        self.shard_error = f"a node of the sharded group was lost: {exc}"
        log.warning("%s", self.shard_error)
        self._head = None  # nobody to tell: no stop message on a broken group
        self.loaded = None
        self.shard = None
        self._fail_all(self.shard_error, 503, code="shard_lost")
        self._unload()
        self.restart_due = True

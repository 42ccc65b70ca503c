"""The settlement spool: settlements the store could not take are kept in local files until it is back.

Why: the answer was already delivered when a request settles; with the store unreachable its usage row and
charge must not be lost. Each entry (the usage row and the charge) is appended as one JSON line to a segment
file under ``ISTHMUS_SPOOL_DIR`` (default ``.isthmus/spool``) and fsynced before the settlement counts as done.
Replaying settles every entry again through the ordinary settlement transaction, which is keyed by the row id
(``attribute_not_exists(id)``): an entry replayed twice (a crash between its write and the segment's removal,
two processes replaying one segment) is written and charged once. A segment is removed once all of its
entries are in the table.

A process appends to its own segment while holding an exclusive ``flock`` on it, so that a replayer in
another process (``flock`` non-blocking) never removes a segment that is still growing; a dead process's lock
goes with it, so its segments are replayed after a restart or by a sibling.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from isthmus.observability import get_logger

log = get_logger("spool")


def spool_dir() -> Path:
    return Path(os.environ.get("ISTHMUS_SPOOL_DIR") or Path(".isthmus") / "spool")


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    raise TypeError(f"cannot spool a {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$decimal" in obj:
        return Decimal(obj["$decimal"])
    return obj


def dumps(entry: dict[str, Any]) -> str:
    return json.dumps(entry, default=_encode, separators=(",", ":"))


def loads(line: str) -> dict[str, Any]:
    out = json.loads(line, object_hook=_decode)
    assert isinstance(out, dict)
    return out


class SettlementSpool:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or spool_dir()
        self._lock = threading.Lock()
        self._active: IO[str] | None = None
        self._active_path: Path | None = None

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Append and fsync: once this returns the entries survive a crash of this process."""
        with self._lock:
            if self._active is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                path = self.directory / f"settlements-{time.time_ns()}-{os.getpid()}-{uuid.uuid4().hex[:6]}.jsonl"
                handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open while this segment grows
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._active, self._active_path = handle, path
                with contextlib.suppress(OSError):  # the new file's name is durable too
                    dir_fd = os.open(self.directory, os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
            self._active.write("".join(dumps(e) + "\n" for e in entries))
            self._active.flush()
            os.fsync(self._active.fileno())
        log.warning("settlements spooled", extra={"count": len(entries)})

    def segments(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(self.directory.glob("settlements-*.jsonl"))

    def pending(self) -> bool:
        return bool(self.segments())

    def _seal(self) -> None:
        """Our growing segment becomes replayable: the next append starts a new one."""
        with self._lock:
            if self._active is not None:
                self._active.close()  # also releases its lock
                self._active = self._active_path = None

    def replay(self, settle: Callable[[dict[str, Any]], bool],
               is_poison: Callable[[Exception], bool] = lambda exc: False) -> int:
        """Settle every spooled entry (``settle`` raises while the store is away: replay stops, the files stay);
        returns how many entries were newly written. An entry whose error ``is_poison`` (the store refuses it
        for what it is, not for being away) is moved to a ``rejected-*.jsonl`` file beside the segments and
        logged, so that it cannot hold up every entry after it."""
        self._seal()
        written = 0
        for path in self.segments():
            try:
                handle = open(path, encoding="utf-8")  # noqa: SIM115 - the lock lives as long as the handle
            except FileNotFoundError:
                continue  # replayed and removed by another process meanwhile
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # another process is still appending to it, or replaying it
                for line in handle.read().splitlines():
                    try:
                        entry = loads(line)
                    except (ValueError, AssertionError):
                        log.warning("torn spool line skipped", extra={"segment": path.name})
                        continue
                    try:
                        written += bool(settle(entry))
                    except Exception as exc:
                        if not is_poison(exc):
                            raise
                        with open(self.directory / f"rejected-{path.name}", "a", encoding="utf-8") as rejected:
                            rejected.write(line + "\n")
                            rejected.flush()
                            os.fsync(rejected.fileno())
                        log.error("spooled settlement rejected by the store",
                                  extra={"segment": path.name, "error": type(exc).__name__})
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if written:
            log.info("spooled settlements replayed", extra={"count": written})
        return written


POISON_CODES = frozenset({"ValidationException", "SerializationException"})


def is_poison(exc: Exception) -> bool:
    """An entry the store will never take (malformed), as opposed to a store that is away or busy."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in POISON_CODES or isinstance(exc, TypeError | KeyError)


_default: dict[str, SettlementSpool] = {}
_default_lock = threading.Lock()


def default_spool() -> SettlementSpool:
    """One spool per process and directory (the writer's segment and the replayer's seal must be the same)."""
    key = str(spool_dir().resolve())
    with _default_lock:
        if key not in _default:
            _default[key] = SettlementSpool(Path(key))
        return _default[key]

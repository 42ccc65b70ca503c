"""Spawning the agent with OpenBLAS on Linux.

The ``mlx-cpu`` wheel links the reference BLAS; preloading Debian's OpenBLAS (``libopenblas0-pthread``)
makes fp32 matmul ~75x faster. ``LD_PRELOAD`` must be set before the process starts, so the agent
re-execs itself once (guarded by an env flag); other code spawns it with :func:`agent_env` directly.
One BLAS thread: the engine already keeps the cores busy and oversubscription hurts on 2 cores.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

PRELOADED_FLAG = "ISTHMUS_OPENBLAS_PRELOADED"
_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblasp.so.0",
)


def find_openblas() -> str | None:
    """Path of an OpenBLAS to preload, or None (not Linux, disabled, or not installed)."""
    if platform.system() != "Linux" or os.environ.get("ISTHMUS_NO_OPENBLAS") == "1":
        return None
    override = os.environ.get("ISTHMUS_OPENBLAS")
    if override:
        return override if Path(override).is_file() else None
    return next((c for c in _CANDIDATES if Path(c).is_file()), None)


def agent_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for an agent process: OpenBLAS preloaded when available."""
    env = dict(os.environ if base is None else base)
    lib = find_openblas()
    if lib:
        preload = env.get("LD_PRELOAD", "")
        if lib not in preload.split(":"):
            env["LD_PRELOAD"] = f"{lib}:{preload}" if preload else lib
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env[PRELOADED_FLAG] = "1"
    return env


def agent_command(model: str, *, host: str = "127.0.0.1", port: int = 8100,
                  extra: Sequence[str] = ()) -> list[str]:
    """argv that starts an agent with the current interpreter (use with ``env=agent_env()``)."""
    return [sys.executable, "-m", "local_runtime.cli", "agent", "--model", model, "--host", host,
            "--port", str(port), *extra]


def reexec_with_openblas() -> None:
    """Replace this process with itself under the OpenBLAS preload, once."""
    if os.environ.get(PRELOADED_FLAG) == "1" or find_openblas() is None:
        return
    env = agent_env()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, list(sys.orig_argv), env)

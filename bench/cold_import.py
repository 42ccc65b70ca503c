"""Cold import time of every function handler module, next to a bare `import starlette` baseline.

Each figure is the median of 5 fresh processes (`python -X importtime`), the cumulative microseconds of the
top-level imports, so interpreter start-up is excluded. Each process imports the handler the way Lambda does:
`import app` from the function's folder, with the layer folders and site-packages on the path and no `site`
processing (so the editable install's import hook, which Lambda does not have, is not counted).
Target: every handler <= 150 ms on this machine.
Run: .venv/bin/python bench/cold_import.py
"""

from __future__ import annotations

import os
import site
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
TARGET_MS = 150.0
SITE_PACKAGES = site.getsitepackages()


def _top_level(stderr: str) -> dict[str, int]:
    """Top-level lines of -X importtime output: module -> cumulative microseconds."""
    out = {}
    for line in stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # one space: not nested
            out[name.strip()] = int(parts[1].strip())
    return out


def _run(code: str, function_dir: Path) -> dict[str, int]:
    path = os.pathsep.join([str(function_dir), str(ROOT / "layers"), str(ROOT / "shared"), *SITE_PACKAGES])
    proc = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code], cwd=function_dir,
                          env={**os.environ, "PYTHONPATH": path}, capture_output=True, text=True, check=True)
    return _top_level(proc.stderr)


def import_ms(module: str, function_dir: Path) -> float:
    """Median cumulative import time of ``module`` in a fresh interpreter, in milliseconds.

    Modules the interpreter imports at start-up (encodings, ...) are not counted."""
    startup = set(_run("pass", function_dir))
    samples = []
    for _ in range(RUNS):
        lines = _run(f"import {module}", function_dir)
        samples.append(sum(us for name, us in lines.items() if name not in startup) / 1000)
    return statistics.median(samples)


def main() -> int:
    handlers = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
    # Warm the bytecode cache once so every run measures imports, not compilation.
    for name in handlers:
        _run("import app", ROOT / "functions" / name)
    baseline = import_ms("starlette", ROOT / "functions" / "health")
    # What any Starlette + pydantic handler pays before a line of ours runs: the floor on this machine.
    floor = import_ms("starlette.applications, starlette.routing, pydantic", ROOT / "functions" / "health")
    print(f"{'module':<28}{'median ms':>10}{'x baseline':>12}  target <= {TARGET_MS:.0f} ms")
    print(f"{'starlette (baseline)':<28}{baseline:>10.1f}{1.0:>12.1f}")
    print(f"{'starlette app + pydantic':<28}{floor:>10.1f}{floor / max(baseline, 0.001):>12.1f}  (dependency floor)")
    worst = 0.0
    for name in handlers:
        ms = import_ms("app", ROOT / "functions" / name)
        worst = max(worst, ms)
        flag = "" if ms <= TARGET_MS else "  OVER"
        print(f"{'functions.' + name + '.app':<28}{ms:>10.1f}{ms / max(baseline, 0.001):>12.1f}{flag}")
    print(f"worst handler: {worst:.1f} ms ({'within' if worst <= TARGET_MS else 'over'} the {TARGET_MS:.0f} ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

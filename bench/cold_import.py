"""Cold import time of every function handler module, next to a bare `import starlette` baseline.

Each figure is the median of 5 fresh processes (`python -X importtime`), the cumulative microseconds of the
top-level import, so interpreter start-up is excluded. Target: every handler <= 150 ms on this machine.
Run: .venv/bin/python bench/cold_import.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
TARGET_MS = 150.0


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


def _run(code: str) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    return _top_level(proc.stderr)


def import_ms(module: str) -> float:
    """Median cumulative import time of ``module`` in a fresh interpreter, in milliseconds.

    Modules the interpreter imports at start-up (site, encodings, ...) are not counted."""
    startup = set(_run("pass"))
    samples = []
    for _ in range(RUNS):
        lines = _run(f"import {module}")
        samples.append(sum(us for name, us in lines.items() if name not in startup) / 1000)
    return statistics.median(samples)


def main() -> int:
    handlers = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
    # Warm the bytecode cache once so every run measures imports, not compilation.
    subprocess.run([sys.executable, "-c", "; ".join(f"import functions.{h}.app" for h in handlers)], cwd=ROOT,
                   check=True, capture_output=True)
    baseline = import_ms("starlette")
    print(f"{'module':<28}{'median ms':>10}{'x baseline':>12}  target <= {TARGET_MS:.0f} ms")
    print(f"{'starlette (baseline)':<28}{baseline:>10.1f}{1.0:>12.1f}")
    worst = 0.0
    for name in handlers:
        ms = import_ms(f"functions.{name}.app")
        worst = max(worst, ms)
        flag = "" if ms <= TARGET_MS else "  OVER"
        print(f"{'functions.' + name + '.app':<28}{ms:>10.1f}{ms / max(baseline, 0.001):>12.1f}{flag}")
    print(f"worst handler: {worst:.1f} ms ({'within' if worst <= TARGET_MS else 'over'} the {TARGET_MS:.0f} ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

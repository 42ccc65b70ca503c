"""Cold start of every function handler module: its import (Lambda's init phase) and its first invoke.

Each figure is the median of 5 fresh processes. The import figure is what `python -X importtime` reports for
`import app` (cumulative microseconds of the top-level imports, so interpreter start-up is excluded); the
first-invoke figure is the wall time of the handler on one sample event from events/ right after, in the same
process (imports it triggers included, timed under -X importtime too). Both are printed, and their sum, for the
default (app.py imports its routes at init) and with ISTHMUS_LAZY_IMPORT=1 (the first invoke does).

Each process runs the code the way Lambda does. The project is staged as the build ships it: the layer packages
(isthmus, isthmus_contracts) and the function folders are copied to a temporary directory and precompiled
(`compileall --invalidation-mode unchecked-hash`, as layers/Makefile and functions/Makefile do: Lambda's /opt
and /var/task are read-only, so nothing compiled at run time is ever cached). Third-party packages come from
this venv's site-packages, which pip precompiled (layers/Makefile precompiles them in the layer). No `site`
processing (so the editable install's import hook, which Lambda does not have) and no bytecode writing.

The first invoke runs with ISTHMUS_MASTER_KEY and ISTHMUS_ADMIN_TOKEN set and no credentials in the event, so
most requests are answered before any DynamoDB call (200 for /health, 401 or 501): the framework path (Mangum,
Starlette, middleware, auth, Powertools). Inference and models write a usage row for the refused request, so
theirs include importing botocore and building a client; with no AWS credentials the call fails at once (503).
Target: every handler's import <= 150 ms on this machine.
Run: .venv/bin/python bench/cold_import.py
"""

from __future__ import annotations

import compileall
import json
import os
import py_compile
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
TARGET_MS = 150.0
SITE_PACKAGES = site.getsitepackages()
MARK = "--isthmus-bench-imported--"
STACK = ("import starlette.applications, starlette.requests, starlette.responses, starlette.routing, mangum; "
         "from aws_lambda_powertools import Logger, Metrics, Tracer")
# One sample event per function (events/<name>.json); its credentials are stripped below.
EVENTS = {"admin": "admin_load", "batches": "batches_list", "budgets": "budgets_create", "files": "files_list",
          "health": "health", "inference": "inference_chat", "keys": "keys_create", "models": "models_list",
          "pricing": "pricing_set", "usage": "usage_list", "users": "users_list"}
INVOKE = f"""
import sys, time
import app
print({MARK!r}, file=sys.stderr, flush=True)
import json
class Context:
    function_name = "bench"; aws_request_id = "bench-1"; memory_limit_in_mb = 512; function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    def get_remaining_time_in_millis(self): return 30000
event = json.loads(open(sys.argv[1]).read())
started = time.perf_counter()
result = app.handler(event, Context())
elapsed = time.perf_counter() - started
print("{MARK}", result["statusCode"], round(elapsed * 1e6), flush=True)
"""


def stage(dest: Path) -> Path:
    """The layers and the function folders as the build ships them (precompiled); returns the layer root."""
    layer = dest / "opt" / "python"
    shutil.copytree(ROOT / "layers" / "isthmus", layer / "isthmus")
    shutil.copytree(ROOT / "shared" / "isthmus_contracts", layer / "isthmus_contracts")
    shutil.copytree(ROOT / "functions", dest / "task")
    for tree in (layer, dest / "task"):
        ok = compileall.compile_dir(tree, quiet=1, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        if not ok:
            raise SystemExit(f"could not compile {tree}")
    return layer


def _env(layer: Path, function_dir: Path, lazy: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISTHMUS_", "POWERTOOLS_", "AWS_"))}
    path = os.pathsep.join([str(function_dir), str(layer), *SITE_PACKAGES])
    if lazy:
        env["ISTHMUS_LAZY_IMPORT"] = "1"
    return {**env, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1", "ISTHMUS_MASTER_KEY": "sk-bench",
            "ISTHMUS_ADMIN_TOKEN": "bench-admin", "POWERTOOLS_METRICS_NAMESPACE": "Isthmus",
            "POWERTOOLS_TRACE_DISABLED": "true", "PYDANTIC_DISABLE_PLUGINS": "__all__",  # as template.yaml
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def _top_level(stderr: str) -> dict[str, int]:
    """Top-level lines of -X importtime output before the marker: module -> cumulative microseconds."""
    out = {}
    for line in stderr.split(MARK)[0].splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2]
        if name.startswith(" ") and not name.startswith("  "):  # one space: not nested
            out[name.strip()] = int(parts[1].strip())
    return out


def _run(code: str, layer: Path, function_dir: Path, *args: str,
         lazy: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", code, *args], cwd=function_dir,
                          env=_env(layer, function_dir, lazy), capture_output=True, text=True, check=True)


def import_ms(statement: str, layer: Path, function_dir: Path) -> float:
    """Median cumulative import time of an import ``statement`` in a fresh interpreter, in milliseconds.

    Modules the interpreter imports at start-up (encodings, ...) are not counted."""
    startup = set(_top_level(_run("pass", layer, function_dir).stderr))
    samples = []
    for _ in range(RUNS):
        lines = _top_level(_run(statement, layer, function_dir).stderr)
        samples.append(sum(us for name, us in lines.items() if name not in startup) / 1000)
    return statistics.median(samples)


def cold_start(layer: Path, function_dir: Path, event: Path, lazy: bool = False) -> tuple[float, float, int]:
    """Median import ms, median first-invoke ms, and the status the sample event got."""
    startup = set(_top_level(_run("pass", layer, function_dir).stderr))
    imports, invokes, status = [], [], 0
    for _ in range(RUNS):
        proc = _run(INVOKE, layer, function_dir, str(event), lazy=lazy)
        imports.append(sum(us for name, us in _top_level(proc.stderr).items() if name not in startup) / 1000)
        code, us = proc.stdout.rsplit(MARK, 1)[1].split()
        status = int(code)
        invokes.append(int(us) / 1000)
    return statistics.median(imports), statistics.median(invokes), status


def _event_without_credentials(name: str, dest: Path) -> Path:
    event = json.loads((ROOT / "events" / f"{name}.json").read_text())
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() not in {"authorization", "x-api-key"}}
    path = dest / f"{name}.json"
    path.write_text(json.dumps(event))
    return path


def main() -> int:
    handlers = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))
    with tempfile.TemporaryDirectory(prefix="isthmus-cold-") as tmp:
        layer = stage(Path(tmp))
        health = Path(tmp) / "task" / "health"
        baseline = import_ms("import starlette", layer, health)
        # What every handler pays before a line of ours runs: the chosen stack (Starlette app, Mangum,
        # Powertools' Logger/Metrics/Tracer), and that plus pydantic (every group that validates a body).
        stack = import_ms(STACK, layer, health)
        floor = import_ms(STACK + "; import pydantic.main", layer, health)
        print(f"{'module':<28}{'import ms':>10}{'1st invoke':>11}{'sum':>8}{'status':>7}"
              f"{'lazy: import':>14}{'1st invoke':>11}{'sum':>8}  target: import <= {TARGET_MS:.0f} ms")
        print(f"{'starlette (baseline)':<28}{baseline:>10.1f}")
        print(f"{'stack (no code of ours)':<28}{stack:>10.1f}  (Starlette app + Mangum + Powertools)")
        print(f"{'stack + pydantic':<28}{floor:>10.1f}")
        worst = 0.0
        for name in handlers:
            event = _event_without_credentials(EVENTS[name], Path(tmp))
            ms, first, status = cold_start(layer, Path(tmp) / "task" / name, event)
            lazy_ms, lazy_first, _ = cold_start(layer, Path(tmp) / "task" / name, event, lazy=True)
            worst = max(worst, ms)
            flag = "" if ms <= TARGET_MS else "  OVER"
            print(f"{'functions.' + name + '.app':<28}{ms:>10.1f}{first:>11.1f}{ms + first:>8.1f}{status:>7}"
                  f"{lazy_ms:>14.1f}{lazy_first:>11.1f}{lazy_ms + lazy_first:>8.1f}{flag}")
    print(f"worst import (default: routes imported at init): {worst:.1f} ms "
          f"({'within' if worst <= TARGET_MS else 'over'} the {TARGET_MS:.0f} ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start of every function handler module: its import (Lambda's init phase) and its first invoke.

Each figure is the median of 5 fresh processes, one per round (every line is measured once a round). The
import figure is what `python -X importtime` reports for `import app` (cumulative microseconds of the top-level
imports); the first-invoke figure is the wall time of the handler on one sample event from events/ right after,
in the same process (imports it triggers included, timed under -X importtime too). Both are printed, and their
sum, for the default (app.py imports its routes at init) and with ISTHMUS_LAZY_IMPORT=1 (the first invoke does).

Not counted, because Lambda's init does not pay for them either: interpreter start-up, and the modules the
Python runtime itself has imported before it imports the handler (RUNTIME: the stdlib imports of the bootstrap
of awslambdaric, the runtime interface client AWS's Python images run). They are imported first, then `app`.

Each process runs the code the way Lambda does. The project is staged as the build ships it: the layer packages
(isthmus, isthmus_contracts) and the function folders are copied to a temporary directory and precompiled
(`compileall --invalidation-mode unchecked-hash`, as layers/Makefile and functions/Makefile do: Lambda's /opt
and /var/task are read-only, so nothing compiled at run time is ever cached). Third-party packages come from
this venv's site-packages, which pip precompiled (layers/Makefile precompiles them in the layer). No `site`
processing (so the editable install's import hook, which Lambda does not have) and no bytecode writing.

Reference lines, measured in the same run: the chosen stack's own import with no code of ours (Starlette app,
Mangum, Powertools), and that plus what any pydantic model costs (pydantic.main, and pydantic.fields, which the
first model class imports: annotated_types, pydantic.types). Each handler's `x stack` is its import over the
stack's, in this run.

`--instructions` counts instructions instead (valgrind's callgrind; one run each, the same count every time
whatever else the machine does): the import of every handler, the stack and the floor, in millions. Wall
times on this VM swing by up to 2x between runs; the counts do not.

The first invoke runs with ISTHMUS_MASTER_KEY and ISTHMUS_ADMIN_TOKEN set and no credentials in the event, so
most requests are answered before any DynamoDB call (200 for /health, 401 or 501): the framework path (Mangum,
Starlette, middleware, auth, Powertools). Inference and models write a usage row for the refused request, so
theirs include importing botocore and building a client; with no AWS credentials the call fails at once (503).
Target: every handler's import <= 150 ms on this machine.
Run: .venv/bin/python bench/cold_import.py [--instructions]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import py_compile
import re
import shutil
import site
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
TARGET_MS = 150.0
SITE_PACKAGES = site.getsitepackages()
MARK = "--isthmus-bench-imported--"
# What the runtime has imported when it imports the handler: the stdlib imports of awslambdaric 4.2.2's
# bootstrap.py, lambda_runtime_client.py, lambda_runtime_marshaller.py and lambda_runtime_log_utils.py.
RUNTIME = "import importlib, json, logging, os, sys, time, traceback, decimal, math, enum"
STACK = ("import starlette.applications, starlette.requests, starlette.responses, starlette.routing, mangum; "
         "from aws_lambda_powertools import Logger, Metrics, Tracer")
FLOOR = STACK + "; import pydantic.main, pydantic.fields"  # the first model class imports pydantic.fields
# One sample event per function (events/<name>.json); its credentials are stripped below.
EVENTS = {"admin": "admin_load", "batches": "batches_list", "budgets": "budgets_create", "files": "files_list",
          "health": "health", "inference": "inference_chat", "keys": "keys_create", "models": "models_list",
          "pricing": "pricing_set", "usage": "usage_list", "users": "users_list"}
INVOKE = f"""
{RUNTIME}
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
    # a sandbox names its function (what isthmus.settings.in_lambda and the init's store client go by); no
    # credentials, so a store call fails at once instead of reaching for AWS
    env["AWS_LAMBDA_FUNCTION_NAME"] = f"bench-{function_dir.name}"
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


def _imported_ms(proc: subprocess.CompletedProcess[str], startup: set[str]) -> float:
    return sum(us for name, us in _top_level(proc.stderr).items() if name not in startup) / 1000


def startup_modules(layer: Path, function_dir: Path) -> set[str]:
    """Top-level modules of interpreter start-up (encodings, ...) and the runtime's own: not counted."""
    return set(_top_level(_run(RUNTIME, layer, function_dir).stderr))


def import_once(statement: str, layer: Path, function_dir: Path, startup: set[str]) -> float:
    """Cumulative import time of an import ``statement`` in a fresh interpreter, in milliseconds."""
    return _imported_ms(_run(f"{RUNTIME}; {statement}", layer, function_dir), startup)


def cold_start_once(layer: Path, function_dir: Path, event: Path, startup: set[str],
                    lazy: bool = False) -> tuple[float, float, int]:
    """Import ms and first-invoke ms of one fresh process, and the status the sample event got."""
    proc = _run(INVOKE, layer, function_dir, str(event), lazy=lazy)
    code, us = proc.stdout.rsplit(MARK, 1)[1].split()
    return _imported_ms(proc, startup), int(us) / 1000, int(code)


def _event_without_credentials(name: str, dest: Path) -> Path:
    event = json.loads((ROOT / "events" / f"{name}.json").read_text())
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() not in {"authorization", "x-api-key"}}
    path = dest / f"{name}.json"
    path.write_text(json.dumps(event))
    return path


def instructions(code: str, layer: Path, function_dir: Path, *args: str) -> int:
    """Instructions a fresh interpreter executes for ``code`` (callgrind, one run; start-up included)."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           "-S", "-c", code, *args], cwd=function_dir, env=_env(layer, function_dir),
                          capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def wall_table(handlers: list[str], tmp: Path, layer: Path) -> float:
    """Medians of RUNS rounds; each round measures every line once, so a slow spell of the host lands on all
    of them rather than on the handful measured during it."""
    health = tmp / "task" / "health"
    startup = startup_modules(layer, health)
    events = {name: _event_without_credentials(EVENTS[name], tmp) for name in handlers}
    # What every handler pays before a line of ours runs: the chosen stack (Starlette app, Mangum,
    # Powertools' Logger/Metrics/Tracer), and that plus pydantic (every group that validates a body).
    refs: dict[str, list[float]] = {"import starlette": [], STACK: [], FLOOR: []}
    runs: dict[tuple[str, bool], list[tuple[float, float, int]]] = {
        (name, lazy): [] for name in handlers for lazy in (False, True)}
    for _ in range(RUNS):
        for statement, samples in refs.items():
            samples.append(import_once(statement, layer, health, startup))
        for (name, lazy), observed in runs.items():
            observed.append(cold_start_once(layer, tmp / "task" / name, events[name], startup, lazy=lazy))
    baseline, stack, floor = (statistics.median(samples) for samples in refs.values())

    def medians(name: str, lazy: bool) -> tuple[float, float, int]:
        observed = runs[(name, lazy)]
        return (statistics.median(o[0] for o in observed), statistics.median(o[1] for o in observed),
                observed[-1][2])

    print(f"{'module':<28}{'import ms':>10}{'x stack':>8}{'1st invoke':>11}{'sum':>8}{'status':>7}"
          f"{'lazy: import':>14}{'1st invoke':>11}{'sum':>8}  target: import <= {TARGET_MS:.0f} ms")
    print(f"{'starlette (baseline)':<28}{baseline:>10.1f}")
    print(f"{'stack (no code of ours)':<28}{stack:>10.1f}{1:>8.2f}  (Starlette app + Mangum + Powertools)")
    print(f"{'stack + pydantic':<28}{floor:>10.1f}{floor / stack:>8.2f}  (+ pydantic.main, pydantic.fields)")
    worst = 0.0
    for name in handlers:
        ms, first, status = medians(name, lazy=False)
        lazy_ms, lazy_first, _ = medians(name, lazy=True)
        worst = max(worst, ms)
        flag = "" if ms <= TARGET_MS else "  OVER"
        print(f"{'functions.' + name + '.app':<28}{ms:>10.1f}{ms / stack:>8.2f}{first:>11.1f}{ms + first:>8.1f}"
              f"{status:>7}{lazy_ms:>14.1f}{lazy_first:>11.1f}{lazy_ms + lazy_first:>8.1f}{flag}")
    return worst


def instruction_table(handlers: list[str], tmp: Path, layer: Path) -> None:
    """Import and first invoke in instructions: each a difference of two counts (runtime; + import; + invoke)."""
    health = tmp / "task" / "health"
    jobs: dict[tuple[str, str], tuple[str, Path, tuple[str, ...]]] = {
        ("runtime", ""): (RUNTIME, health, ()), ("stack", ""): (f"{RUNTIME}; {STACK}", health, ()),
        ("floor", ""): (f"{RUNTIME}; {FLOOR}", health, ())}
    for name in handlers:
        event = str(_event_without_credentials(EVENTS[name], tmp))
        jobs[("import", name)] = (f"{RUNTIME}; import app", tmp / "task" / name, ())
        jobs[("invoke", name)] = (INVOKE, tmp / "task" / name, (event,))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # counts do not depend on the load
        counts = dict(zip(jobs, pool.map(lambda job: instructions(job[0], layer, job[1], *job[2]), jobs.values()),
                          strict=True))
    runtime = counts[("runtime", "")]
    stack, floor = counts[("stack", "")] - runtime, counts[("floor", "")] - runtime
    print(f"{'M instructions':<28}{'import':>10}{'x stack':>8}{'over stack':>12}{'over stack + pydantic':>23}"
          f"{'1st invoke':>12}")
    print(f"{'stack (no code of ours)':<28}{stack / 1e6:>10.1f}{1:>8.2f}  (Starlette app + Mangum + Powertools)")
    print(f"{'stack + pydantic':<28}{floor / 1e6:>10.1f}{floor / stack:>8.2f}  (+ pydantic.main, pydantic.fields)")
    for name in handlers:
        imported = counts[("import", name)] - runtime
        invoked = counts[("invoke", name)] - counts[("import", name)]
        # over stack + pydantic: only for the groups with pydantic models (below that line otherwise)
        over = f"{(imported - floor) / 1e6:>+23.1f}" if imported >= floor else f"{'':>23}"
        print(f"{'functions.' + name + '.app':<28}{imported / 1e6:>10.1f}{imported / stack:>8.2f}"
              f"{(imported - stack) / 1e6:>+12.1f}{over}{invoked / 1e6:>12.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions (valgrind) instead of timing; one run each")
    parser.add_argument("--only", nargs="*", default=None, help="only these handlers (e.g. inference models)")
    args = parser.parse_args()
    handlers = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py")
                      if not args.only or p.parent.name in args.only)
    with tempfile.TemporaryDirectory(prefix="isthmus-cold-") as tmp:
        layer = stage(Path(tmp))
        if args.instructions:
            instruction_table(handlers, Path(tmp), layer)
            return 0
        worst = wall_table(handlers, Path(tmp), layer)
    print(f"worst import (default: routes imported at init): {worst:.1f} ms "
          f"({'within' if worst <= TARGET_MS else 'over'} the {TARGET_MS:.0f} ms target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

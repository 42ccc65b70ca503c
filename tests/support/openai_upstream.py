"""A real OpenAI-compatible single-Mac upstream for tests: ``mlx_lm.server`` serving a model directory on a free
loopback port, behind a small key-checking proxy (mlx_lm.server has no api key of its own), the way an operator
puts LM Studio or Ollama behind a reverse proxy with a token. The proxy records every request it forwarded
(path, Authorization header, JSON body) for assertions. Never used outside tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local_runtime.agent.launcher import agent_env
from local_runtime.ddb import free_port
from local_runtime.process import stop, wait_http
from tests.support.loopback_server import LoopbackServer, streamed_from


class MlxLmServer:
    """``python -m mlx_lm.server --model DIR`` as a subprocess (OpenBLAS preloaded like an agent)."""

    def __init__(self, model: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir / f"mlx-lm-server-{self.port}.log").open("w")
        # Its /v1/models scans the Hugging Face cache and answers an empty body when there is none: an empty one.
        hub_cache = log_dir / f"hf-cache-{self.port}"
        hub_cache.mkdir(exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "mlx_lm.server", "--model", str(model),
                                      "--host", "127.0.0.1", "--port", str(self.port), "--max-tokens", "16"],
                                     env={**agent_env(), "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1"},
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if not wait_http(f"{self.base}/v1/models", 120, alive=lambda: self.proc.poll() is None):
            self.stop()
            raise RuntimeError(f"mlx_lm.server did not start; see {self.log.name}")

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


class KeyProxy(LoopbackServer):
    """Forwards ``/v1/*`` to ``upstream`` when ``Authorization: Bearer <key>`` matches, else 401 in OpenAI's
    shape; streams pass through as they come."""

    def __init__(self, upstream: str, key: str) -> None:
        self.upstream, self.key = upstream, key
        self.requests: list[dict[str, Any]] = []
        super().__init__([Route("/{path:path}", self.forward, methods=["GET", "POST"])])

    async def forward(self, request: Request) -> Response:
        raw = await request.body()
        auth = request.headers.get("authorization", "")
        self.requests.append({"path": request.url.path, "authorization": auth,
                              "body": json.loads(raw) if raw else None})
        if auth != f"Bearer {self.key}":
            return JSONResponse({"error": {"message": "invalid api key", "type": "invalid_request_error",
                                           "code": "invalid_api_key"}}, status_code=401)
        return await streamed_from(
            request.method, self.upstream + request.url.path, timeout=120, content=raw or None,
            headers={"content-type": "application/json"},
            answer_headers=lambda up: {"content-type": up.headers.get("content-type", "application/json")})

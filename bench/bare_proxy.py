"""The floor of a Python gateway on this stack: uvicorn (the edge's server and options) and a bare ASGI app that
forwards each POST verbatim to the upstream over the edge's own HTTP/1.1 client transport (LeanTransport) and
streams the answer back, chunk by chunk. No routing, no parsing, no dialect, no tenancy.

bench/paths.py runs it beside the edges as the "floor" line: what any proxy process costs on this host (the
loopback hop in and out, uvicorn's HTTP handling, one client request), so that what the edge adds beyond it, our
own code, is read off the same run.

Run: python bench/bare_proxy.py PORT UPSTREAM_BASE
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers"))

from isthmus.adapters.cloud.lean_http import LeanTransport

Scope = dict[str, Any]


def make_app(upstream: str) -> Any:
    client = httpx.AsyncClient(transport=LeanTransport(max_connections=200, max_keepalive_connections=50),
                               timeout=60)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": b'{"status":"ok"}'})
            return
        request = client.build_request("POST", upstream + scope["path"], content=body,
                                        headers={"content-type": "application/json"})
        resp = await client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": resp.status_code,
                        "headers": [(b"content-type", resp.headers.get("content-type", "").encode())]})
            async for chunk in resp.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await resp.aclose()

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(make_app(sys.argv[2].rstrip("/")), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
                access_log=False)

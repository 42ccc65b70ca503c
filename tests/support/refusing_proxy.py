"""A loopback HTTP proxy in front of a DynamoDB endpoint that refuses chosen operations the way an engine
without them answers (400 ``UnknownOperationException``): a stand-in for a DynamoDB-compatible store that lacks,
say, TransactWriteItems."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class RefusingProxy:
    def __init__(self, upstream: str, refused: set[str]) -> None:
        self.upstream, self.refused = upstream.rstrip("/"), refused
        self.refusals = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                operation = (self.headers.get("x-amz-target") or "").rpartition(".")[2]
                if operation in proxy.refused:
                    proxy.refusals += 1
                    self._answer(400, json.dumps({
                        "__type": "com.amazonaws.dynamodb.v20120810#UnknownOperationException",
                        "message": f"{operation} is not supported by this engine"}).encode())
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=30)
                self._answer(answer.status_code, answer.content, answer.headers.get("content-type"))

            def _answer(self, status: int, payload: bytes, content_type: str | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type or "application/x-amz-json-1.0")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RefusingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

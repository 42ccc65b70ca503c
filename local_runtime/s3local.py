"""An S3-protocol server on loopback for the S3 blob store's tests: the npm package ``s3rver`` (installed into
ISTHMUS_TOOLS_DIR on first use, as DynamoDB Local is), run with node. Not part of `isthmus dev`: a local edge keeps
uploaded files in its data dir."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from local_runtime.npm_tools import ensure_npm_package, tools_dir
from local_runtime.process import stop

S3RVER_PACKAGE = "s3rver@3.7.1"
# s3rver accepts exactly these credentials (its documented defaults); nothing real is ever signed with them
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"


def find_s3rver(root: Path | None = None) -> Path | None:
    script = (root or tools_dir()) / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    return script if script.is_file() else None


def ensure_s3rver() -> Path:
    """The s3rver script, installing the npm package on first use."""
    return ensure_npm_package(S3RVER_PACKAGE, tools_dir(), find_s3rver, "bin/s3rver.js", "s3rver")


class S3Local:
    """One s3rver on 127.0.0.1:``port`` keeping its objects under ``directory``, with ``bucket`` made at start."""

    def __init__(self, port: int, directory: Path, bucket: str) -> None:
        self.port = port
        self.directory = directory
        self.bucket = bucket
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> S3Local:
        node = shutil.which("node")
        if not node:
            raise RuntimeError("node is needed to run s3rver (Debian: apt-get install -y nodejs).")
        script = ensure_s3rver()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [node, str(script), "--address", "127.0.0.1", "--port", str(self.port), "--directory",
             str(self.directory), "--configure-bucket", self.bucket, "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"s3rver exited with {self.proc.returncode}: {err[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"s3rver did not listen on {self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        stop(self.proc)

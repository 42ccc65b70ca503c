"""Node tools the project runs locally (DynamoDB Local, s3rver, the docs page's swagger-ui files): npm packages
installed into ISTHMUS_TOOLS_DIR on first use, never at run time from anywhere but the npm registry."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from local_runtime.template import PROJECT_ROOT


def tools_dir() -> Path:
    return Path(os.environ.get("ISTHMUS_TOOLS_DIR", PROJECT_ROOT / ".isthmus" / "tools"))


def ensure_npm_package(package: str, prefix: Path, find: Callable[[], Path | None], wanted: str,
                       purpose: str) -> Path:
    """The path ``find`` returns, running `npm install <package>` into ``prefix`` first when it returns None.
    ``wanted`` names the file ``find`` looks for and ``purpose`` what it is for, both only for error messages."""
    found = find()
    if found:
        return found
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError(f"npm is needed to install {purpose} (Debian: apt-get install -y npm).")
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), package],
                   check=True, stdout=subprocess.DEVNULL)
    found = find()
    if not found:
        raise RuntimeError(f"{package} installed but {wanted} was not found under {prefix}")
    return found

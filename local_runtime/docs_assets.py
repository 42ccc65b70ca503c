"""The docs page's files (npm ``swagger-ui-dist``), installed into ISTHMUS_TOOLS_DIR on first use, the way DynamoDB
Local is (local_runtime/ddb.py); a built Lambda function carries its own copy (functions/Makefile)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from local_runtime.ddb import tools_dir

SWAGGER_UI_PACKAGE = "swagger-ui-dist@5.35.0"  # keep in step with functions/docs/routes.py and functions/Makefile


def swagger_ui_dir() -> Path:
    return tools_dir() / "swagger-ui" / "node_modules" / "swagger-ui-dist"


def ensure_swagger_ui() -> Path:
    folder = swagger_ui_dir()
    if (folder / "swagger-ui-bundle.js").is_file():
        return folder
    npm = shutil.which("npm")
    if not npm:
        raise RuntimeError("npm is needed to install the docs page's assets (Debian: apt-get install -y npm).")
    prefix = tools_dir() / "swagger-ui"
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), SWAGGER_UI_PACKAGE],
                   check=True, stdout=subprocess.DEVNULL)
    if not (folder / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"{SWAGGER_UI_PACKAGE} installed but swagger-ui-bundle.js is not under {folder}")
    return folder

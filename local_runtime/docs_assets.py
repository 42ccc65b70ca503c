"""The docs page's files (npm ``swagger-ui-dist``), installed into ISTHMUS_TOOLS_DIR on first use, the way DynamoDB
Local is (local_runtime/ddb.py); a built Lambda function carries its own copy (functions/Makefile)."""

from __future__ import annotations

from pathlib import Path

from local_runtime.npm_tools import ensure_npm_package, tools_dir

SWAGGER_UI_PACKAGE = "swagger-ui-dist@5.35.0"  # keep in step with functions/docs/routes.py and functions/Makefile


def swagger_ui_dir() -> Path:
    return tools_dir() / "swagger-ui" / "node_modules" / "swagger-ui-dist"


def find_swagger_ui() -> Path | None:
    folder = swagger_ui_dir()
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def ensure_swagger_ui() -> Path:
    """The swagger-ui-dist folder, installing the npm package on first use."""
    return ensure_npm_package(SWAGGER_UI_PACKAGE, tools_dir() / "swagger-ui", find_swagger_ui,
                              "swagger-ui-bundle.js", "the docs page's assets")

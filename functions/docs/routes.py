"""``/openapi.json`` (also under /v1 and /api/v1): the API's OpenAPI 3.1 document (isthmus.openapi), and ``/docs``:
Swagger UI over it. The UI's files come from the swagger-ui-dist npm package, put next to this module by
``sam build`` (functions/Makefile) or, locally, installed into ISTHMUS_TOOLS_DIR by ``make setup``
(local_runtime/docs_assets.py): never fetched from a CDN by the browser."""

import functools
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from isthmus import openapi
from isthmus.errors import ApiError
from isthmus.observability import lambda_entry
from isthmus.web import create_app, json_response

SERVICE = "docs"
SWAGGER_UI_VERSION = "5.35.0"
ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript", "LICENSE": "text/plain"}
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Isthmus API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});</script>
</body></html>
"""


def assets_dir() -> Path | None:
    """Where the UI's files are: beside this module in a built function, else the local tools directory."""
    tools = Path(os.environ.get("ISTHMUS_TOOLS_DIR") or Path(__file__).resolve().parents[2] / ".isthmus" / "tools")
    for candidate in (Path(__file__).resolve().parent / "assets",
                      tools / "swagger-ui" / "node_modules" / "swagger-ui-dist"):
        if (candidate / "swagger-ui-bundle.js").is_file():
            return candidate
    return None


@functools.cache
def _spec_body() -> bytes:
    """The document encoded once per process: it does not change while the process lives (~6 ms a request)."""
    return bytes(json_response(openapi.document()).body)


async def spec(request: Request) -> Response:
    return Response(_spec_body(), media_type="application/json", headers={"cache-control": "public, max-age=300"})


async def docs(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def asset(request: Request) -> Response:
    name = request.path_params["asset"]
    if name not in ASSETS:
        raise ApiError(404, f"No docs asset {name!r}", code="not_found")
    folder = assets_dir()
    if folder is None:
        raise ApiError(503, "The docs page's assets (npm swagger-ui-dist) are not installed: run `make setup`.",
                       code="docs_assets_missing")
    return Response((folder / name).read_bytes(), media_type=ASSETS[name],
                    headers={"cache-control": "public, max-age=86400"})


app = create_app(
    [Route(path, spec, methods=["GET"]) for path in ("/openapi.json", "/v1/openapi.json", "/api/v1/openapi.json")]
    + [Route("/docs", docs, methods=["GET"]), Route("/docs/{asset}", asset, methods=["GET"])],
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, store=False, prepare=_spec_body)  # no store

"""The dashboard's static files (static/: one HTML shell, ES modules, one stylesheet), served as they are.

No data passes through here: every page calls the JSON APIs that exist, with the token the operator typed
(kept in sessionStorage). So these routes are public on purpose, like a login page, and hold nothing secret.
Each answer carries a strict CSP (scripts, styles and connections from this origin only, no inline script),
``nosniff``, no framing, no referrer; files are read once per process (a request is a lookup in that
list, never a file-system path) and revalidated by ETag.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from isthmus.errors import ApiError
from isthmus.observability import lambda_entry
from isthmus.web import create_app

SERVICE = "dashboard"
STATIC = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon", ".json": "application/json"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "referrer-policy": "no-referrer", "cross-origin-opener-policy": "same-origin"}


@cache
def _assets() -> dict[str, tuple[bytes, str, str]]:
    """Every servable file under static/ by its relative path: (body, content type, etag). Read once per process;
    a request is a dictionary lookup, so no path a client sends ever reaches the file system."""
    found: dict[str, tuple[bytes, str, str]] = {}
    for path in sorted(STATIC.rglob("*")):
        relative = path.relative_to(STATIC)
        if not path.is_file() or path.suffix not in CONTENT_TYPES or any(p.startswith(".") for p in relative.parts):
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        found[relative.as_posix()] = (body, CONTENT_TYPES[path.suffix], etag)
    return found


def _serve(request: Request, relative: str) -> Response:
    found = _assets().get(relative)
    if found is None:
        raise ApiError(404, f"No dashboard file {relative!r}", code="not_found")
    body, content_type, etag = found
    # Revalidated on every use (a 304 costs one round trip on the LAN): a new deploy is seen at once.
    headers = {**SECURITY_HEADERS, "etag": etag, "cache-control": "no-cache"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=content_type, headers=headers)


async def index(request: Request) -> Response:
    if not request.url.path.endswith("/"):  # relative asset URLs resolve under /dashboard/
        return RedirectResponse("/dashboard/", status_code=308, headers=SECURITY_HEADERS)
    return _serve(request, "index.html")


async def asset(request: Request) -> Response:
    return _serve(request, request.path_params["path"])


app = create_app(
    [
        Route("/dashboard", index, methods=["GET", "HEAD"]),
        Route("/dashboard/", index, methods=["GET", "HEAD"]),
        Route("/dashboard/{path:path}", asset, methods=["GET", "HEAD"]),
    ],
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, store=False, prepare=_assets)  # static files: no store

"""The cluster admin API. Routes exist now; the control plane lands with #5 (501 until then)."""

from isthmus.observability import lambda_entry
from isthmus.web import create_app, placeholder_routes

SERVICE = "admin"

app = create_app(placeholder_routes(["/admin/{rest:path}"], SERVICE, 5, versioned_paths=False), service=SERVICE)
handler = lambda_entry(app, SERVICE)

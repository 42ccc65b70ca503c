"""The batches endpoint group. Routes exist now; the service lands with #6 (501 until then)."""

from isthmus.observability import lambda_entry
from isthmus.web import create_app, placeholder_routes

SERVICE = "batches"

app = create_app(placeholder_routes(["/batches", "/batches/{rest:path}"], SERVICE, 6), service=SERVICE)
handler = lambda_entry(app, SERVICE)

"""/v1/models. Routes exist now; the model listing lands with #5 (501 until then)."""

from isthmus.observability import lambda_entry
from isthmus.web import create_app, placeholder_routes

SERVICE = "models"

app = create_app(placeholder_routes(["/models", "/models/{model_id:path}"], SERVICE, 5), service=SERVICE)
handler = lambda_entry(app, SERVICE)

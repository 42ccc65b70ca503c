"""Inference: chat completions, messages, count_tokens, responses. The dialect layer lands with #4."""

from isthmus.observability import lambda_entry
from isthmus.web import create_app, placeholder_routes

SERVICE = "inference"

app = create_app(
    placeholder_routes(["/chat/completions", "/messages", "/messages/count_tokens", "/responses",
                        "/responses/{response_id}"], SERVICE, 4),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE)

"""The dialect layer: pure mappings between the public APIs and the internal model (no I/O).

Modules (each exposes ``parse(body)`` -> request model, ``to_internal(...)`` and renderers):

- :mod:`.openai_chat` — ``/v1/chat/completions``: ``to_chat_completion``, ``ChatStreamEncoder``
  (frame with ``common.sse_data``, end with ``common.SSE_DONE``);
- :mod:`.anthropic_messages` — ``/v1/messages``: ``to_message``, ``MessagesStreamEncoder``, ``ping_event``
  (frame with ``common.sse_event``);
- :mod:`.count_tokens` — ``/v1/messages/count_tokens``: ``to_internal``, ``estimate``, ``response``;
- :mod:`.openai_responses` / :mod:`.openai_responses_stream` — ``/v1/responses``: ``to_response``,
  ``prepend_previous`` (for ``previous_response_id``), ``ResponsesStreamEncoder`` (frame with ``sse_event``);
- :mod:`.common` — ids, time, request validation (pydantic errors -> one 400 ApiError), SSE framing.

Stream encoders: ``feed(event)`` returns the dicts to send now; call ``close()`` when the backend stream
ends (it flushes a usage chunk / terminal event still owed when the backend sent no usage).
"""

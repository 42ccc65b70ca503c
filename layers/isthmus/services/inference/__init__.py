"""Inference: the request's way through (resolve, admit, answer, settle), routing I/O, token bounds, Responses
memory, passthrough, the model listing."""

"""Contracts shared by the cloud side (layers/, functions/) and local_runtime: pydantic wire models of the
internal request/response/stream protocol, of the node-agent protocol, and the table definitions."""

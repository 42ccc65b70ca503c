"""Adapters: the concrete implementations of isthmus.ports (DynamoDB, S3, HTTP clients)."""

"""Uploaded files (the OpenAI Files API's storage and rules): :class:`FileService` implements
isthmus.ports.files.FileAccess over a blob store and a metadata table."""

from isthmus.services.files.service import FileService, max_file_bytes, new_file_id

__all__ = ["FileService", "max_file_bytes", "new_file_id"]

"""What each Lambda function's first request would build, made at init instead (``isthmus.lambda_init.prepare``
calls the function's hook): the services of its group, from :mod:`isthmus.wiring`."""

from __future__ import annotations

import os

from isthmus import wiring


def prepare_tenancy() -> None:
    """The groups that authenticate a key or the master key: the gate, its stores and credentials."""
    if wiring.tenancy_on():
        wiring.gate()


def prepare_files() -> None:
    """The files service and, when the bytes live in S3, the S3 client (its model is the largest we load)."""
    prepare_tenancy()
    wiring.file_access()
    if os.environ.get("ISTHMUS_FILES_BUCKET"):
        from isthmus.adapters.blob_s3 import s3_client

        s3_client().exceptions  # noqa: B018 (the client and its modeled errors, NoSuchKey: built on first use)


def prepare_batches() -> None:
    """The batches API over the files service (the SQS client is made by the first batch created)."""
    prepare_files()
    wiring.batch_service()


def prepare_models() -> None:
    prepare_tenancy()
    wiring.new_routing_service()


def prepare_admin() -> None:
    for service in (wiring.cluster_service, wiring.load_job_service, wiring.node_service, wiring.settings_service,
                    wiring.sync_service, wiring.provider_service):
        service()

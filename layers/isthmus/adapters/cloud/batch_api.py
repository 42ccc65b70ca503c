"""The providers' own batch APIs, over the cloud transport's pooled client and error mapping (transport.py):
OpenAI's files + batches (``/files`` multipart upload, ``/batches``, ``/files/{id}/content``) and Anthropic's
Message Batches (``/messages/batches``, its ``results_url``). No retries here: a 5xx or a timeout is the batch
poller's to retry on its next round; a 4xx is the provider refusing (mapped by ``transport.map_status``).

Not a ``*_provider`` module: the protocol registry (protocols.py) does not list it."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from isthmus.adapters.cloud import anthropic_provider, transport
from isthmus.adapters.cloud.anthropic_provider import ANTHROPIC_VERSION
from isthmus.errors import ApiError

if TYPE_CHECKING:
    from isthmus.ports.providers import ProviderTarget
    from isthmus_contracts.internal import InternalRequest, InternalResponse

MAX_RESULT_BYTES = 512 * 1024 * 1024  # a provider's output file, read whole (at most 50,000 lines)


def _headers(target: ProviderTarget) -> dict[str, str]:
    if target.protocol == "anthropic":
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return headers
    return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}


async def _call(target: ProviderTarget, method: str, path_or_url: str, *, body: Any = None,
                content: bytes | None = None, content_type: str | None = None) -> bytes:
    """One call, its whole body; ApiError (mapped) on a non-2xx answer, 502/504 when the provider is unreachable."""
    # cold start: httpx on the first cloud call (transport's docstring)
    import httpx

    url = path_or_url if path_or_url.startswith(("http://", "https://")) else target.api_base.rstrip("/") + path_or_url
    headers = {**target.headers, **_headers(target)}
    if content_type:
        headers["content-type"] = content_type
    timeout = httpx.Timeout(connect=target.connect_timeout, read=target.whole_timeout, write=60.0, pool=10.0)
    try:
        resp = await transport.client(target).request(method, url, json=body if content is None else None,
                                                      content=content, headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        raise transport.timeout_error(target, "batch API") from None
    except httpx.TransportError as exc:
        raise ApiError(502, f"provider '{target.provider_id}' unreachable ({type(exc).__name__})",
                       code="upstream_unavailable") from None
    if resp.status_code >= 400:
        raise transport.map_status(target, resp.status_code, resp.content, resp.headers)
    if len(resp.content) > MAX_RESULT_BYTES:
        raise ApiError(502, f"provider '{target.provider_id}' sent more than {MAX_RESULT_BYTES} bytes",
                       code="upstream_error")
    return resp.content


async def _json(target: ProviderTarget, method: str, path: str, body: Any = None) -> dict[str, Any]:
    raw = await _call(target, method, path, body=body)
    try:
        data = json.loads(raw)
    except ValueError:
        raise ApiError(502, f"provider '{target.provider_id}' sent unreadable JSON", code="upstream_error") from None
    if not isinstance(data, dict):
        raise ApiError(502, f"provider '{target.provider_id}' sent an unexpected answer", code="upstream_error")
    return data


# ---- OpenAI: files + batches ----------------------------------------------------------------------------------
async def openai_upload(target: ProviderTarget, jsonl: bytes, filename: str) -> str:
    """Uploads a batch input file (purpose ``batch``, multipart); the provider's file id."""
    boundary = f"isthmus-{uuid.uuid4().hex}"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: application/jsonl\r\n\r\n").encode()
    content = head + jsonl + f"\r\n--{boundary}--\r\n".encode()
    raw = await _call(target, "POST", "/files", content=content,
                      content_type=f"multipart/form-data; boundary={boundary}")
    try:
        return str(json.loads(raw)["id"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(502, f"provider '{target.provider_id}' answered the upload without a file id",
                       code="upstream_error") from None


async def openai_create(target: ProviderTarget, input_file_id: str, endpoint: str,
                        completion_window: str) -> dict[str, Any]:
    return await _json(target, "POST", "/batches", {"input_file_id": input_file_id, "endpoint": endpoint,
                                                    "completion_window": completion_window})


async def openai_get(target: ProviderTarget, batch_id: str) -> dict[str, Any]:
    return await _json(target, "GET", f"/batches/{batch_id}")


async def openai_cancel(target: ProviderTarget, batch_id: str) -> dict[str, Any]:
    return await _json(target, "POST", f"/batches/{batch_id}/cancel")


async def openai_file_content(target: ProviderTarget, file_id: str) -> bytes:
    return await _call(target, "GET", f"/files/{file_id}/content")


# ---- Anthropic: Message Batches -------------------------------------------------------------------------------
async def anthropic_create(target: ProviderTarget, requests: list[dict[str, Any]]) -> dict[str, Any]:
    return await _json(target, "POST", "/messages/batches", {"requests": requests})


async def anthropic_get(target: ProviderTarget, batch_id: str) -> dict[str, Any]:
    return await _json(target, "GET", f"/messages/batches/{batch_id}")


async def anthropic_cancel(target: ProviderTarget, batch_id: str) -> dict[str, Any]:
    return await _json(target, "POST", f"/messages/batches/{batch_id}/cancel")


async def anthropic_results(target: ProviderTarget, results_url: str) -> bytes:
    """The results JSONL. ``results_url`` is absolute and the provider's key goes with it, so only to the
    provider's own origin (never a host an answer names)."""
    from urllib.parse import urlsplit

    given, ours = urlsplit(results_url), urlsplit(target.api_base)
    if (given.scheme, given.netloc) != (ours.scheme, ours.netloc):
        raise ApiError(502, f"provider '{target.provider_id}' named results outside its api_base",
                       code="upstream_error")
    return await _call(target, "GET", results_url)


class CloudBatchApi:
    """This module as the :class:`~isthmus.ports.provider_batches.ProviderBatchApi` the batch engine is given."""

    async def submit(self, target: ProviderTarget, endpoint: str, name: str, inputs: list[dict[str, Any]]) -> str:
        if target.protocol == "openai":
            jsonl = "".join(json.dumps(row) + "\n" for row in inputs).encode()
            file_id = await openai_upload(target, jsonl, f"{name}.jsonl")
            remote = await openai_create(target, file_id, endpoint, "24h")  # OpenAI takes no other window
        else:
            remote = await anthropic_create(target, inputs)
        if not remote.get("id"):
            raise ApiError(502, f"provider '{target.provider_id}' created no batch id", code="upstream_error")
        return str(remote["id"])

    async def status(self, target: ProviderTarget, remote_id: str) -> dict[str, Any]:
        if target.protocol == "openai":
            return await openai_get(target, remote_id)
        return await anthropic_get(target, remote_id)

    async def cancel(self, target: ProviderTarget, remote_id: str) -> None:
        if target.protocol == "openai":
            await openai_cancel(target, remote_id)
        else:
            await anthropic_cancel(target, remote_id)

    async def results(self, target: ProviderTarget, remote: dict[str, Any]) -> bytes:
        if target.protocol == "openai":
            parts = [await openai_file_content(target, str(file_id))
                     for file_id in (remote.get("output_file_id"), remote.get("error_file_id")) if file_id]
            return b"\n".join(parts)
        url = remote.get("results_url")
        return await anthropic_results(target, str(url)) if url else b""

    def anthropic_params(self, request: InternalRequest, upstream_model: str) -> dict[str, Any]:
        return anthropic_provider.to_body(request, upstream_model, stream=False)

    def anthropic_answer(self, message: dict[str, Any], model: str) -> InternalResponse:
        return anthropic_provider.to_response(message, model)

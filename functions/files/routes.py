"""/v1/files (OpenAI's Files API): upload (multipart, streamed to storage), list, retrieve, content, delete.

Any key may call: its user owns what it uploads and sees only that; the master key sees every file; open mode is
one shared caller (see isthmus.services.files.wire.owner_of). Errors are OpenAI error objects.
"""

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from isthmus import init_parts, wiring
from isthmus.auth_http import ANY_KEY
from isthmus.errors import bad_request
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.ports.files import FileNotFound, FileRecord, FileTooLarge
from isthmus.services.files.upload_form import MAX_FIELD_BYTES, UploadForm
from isthmus.services.files.wire import (
    content_type_for,
    file_list,
    file_object,
    list_params,
    no_such_file,
    owner_of,
    too_large,
    upload_terms,
)
from isthmus.web import create_app, json_response, versioned

SERVICE = "files"
FORM_OVERHEAD = MAX_FIELD_BYTES + 64 * 1024  # boundaries and part headers around the file's bytes


@authorized(ANY_KEY)
async def upload_file(request: Request) -> Response:
    owner, _ = owner_of(request.state.principal)
    service = wiring.file_access()
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > service.max_bytes + FORM_OVERHEAD:
        raise too_large(service.max_bytes)  # refused before a byte of it is read
    form = UploadForm(request.stream(), request.headers.get("content-type", ""))
    if not await form.find_file():
        raise bad_request("Missing required file part 'file'.", param="file")
    try:
        record = await service.upload(owner_id=owner, filename=form.filename,
                                      content_type=content_type_for(form.filename, form.file_content_type),
                                      chunks=form.file_chunks(), terms=lambda: upload_terms(form.fields))
    except FileTooLarge as exc:
        raise too_large(exc.limit) from None
    return json_response(file_object(record))


@authorized(ANY_KEY)
async def list_files(request: Request) -> Response:
    _, scope = owner_of(request.state.principal)
    purpose, limit, after, order = list_params(request.query_params)
    try:
        page, more = await wiring.file_access().list_files(owner_id=scope, purpose=purpose, limit=limit,
                                                           after=after, order=order)
    except FileNotFound:
        raise bad_request(f"after: no such file {after!r}.", param="after") from None
    return json_response(file_list(page, more))


async def _visible(request: Request) -> FileRecord:
    _, scope = owner_of(request.state.principal)
    file_id = request.path_params["file_id"]
    try:
        return await wiring.file_access().get(file_id, owner_id=scope)
    except FileNotFound:
        raise no_such_file(file_id) from None


@authorized(ANY_KEY)
async def retrieve_file(request: Request) -> Response:
    return json_response(file_object(await _visible(request)))


@authorized(ANY_KEY)
async def file_content(request: Request) -> Response:
    record = await _visible(request)
    quoted = record.filename.replace("\\", "_").replace('"', "_")
    return StreamingResponse(wiring.file_access().content(record), media_type=record.content_type,
                             headers={"content-length": str(record.size),
                                      "content-disposition": f'attachment; filename="{quoted}"'})


@authorized(ANY_KEY)
async def delete_file(request: Request) -> Response:
    _, scope = owner_of(request.state.principal)
    file_id = request.path_params["file_id"]
    try:
        await wiring.file_access().delete(file_id, owner_id=scope)
    except FileNotFound:
        raise no_such_file(file_id) from None
    return json_response({"id": file_id, "object": "file", "deleted": True})


app = create_app(
    versioned("/files", upload_file, ["POST"]) + versioned("/files", list_files, ["GET"])
    + versioned("/files/{file_id}", retrieve_file, ["GET"]) + versioned("/files/{file_id}", delete_file, ["DELETE"])
    + versioned("/files/{file_id}/content", file_content, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_files)

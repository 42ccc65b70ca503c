"""The streamed multipart reader of POST /v1/files: the file part is handed on in pieces as the body arrives, the
fields are read whichever side of the file they are on, and a malformed or oversized form is a 400/413."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from isthmus.errors import ApiError
from isthmus.services.files.upload_form import MAX_FIELD_BYTES, UploadForm
from isthmus.services.files.wire import upload_terms


def _form(files: Any, data: Any = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://edge/v1/files", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def _pieces(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start:start + size]


async def _read(body: bytes, content_type: str) -> tuple[UploadForm, bool, list[bytes]]:
    form = UploadForm(_pieces(body), content_type)
    found = await form.find_file()
    chunks = [c async for c in form.file_chunks()] if found else []
    return form, found, chunks


def test_fields_before_and_after_the_file() -> None:
    data = bytes(range(256)) * 100
    for files in ([("file", ("in.jsonl", data, "application/jsonl")), ("purpose", (None, b"batch")),
                   ("expires_after[anchor]", (None, b"created_at")), ("expires_after[seconds]", (None, b"3600"))],
                  [("purpose", (None, b"batch")), ("file", ("in.jsonl", data, "application/jsonl"))]):
        body, content_type = _form(files)
        form, found, chunks = asyncio.run(_read(body, content_type))
        # then the file's bytes come in several pieces, whole, and the fields are known once they are through
        assert found and b"".join(chunks) == data and len(chunks) > 1
        assert (form.filename, form.file_content_type) == ("in.jsonl", "application/jsonl")
        assert upload_terms(form.fields)[0] == "batch"
    assert upload_terms({"purpose": "batch", "expires_after[anchor]": "created_at",
                         "expires_after[seconds]": "3600"}) == ("batch", 3600)


@pytest.mark.parametrize("fields,param", [
    ({}, "purpose"), ({"purpose": "batch_output"}, "purpose"),
    ({"purpose": "batch", "expires_after[anchor]": "now", "expires_after[seconds]": "60"}, "expires_after.anchor"),
    ({"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "-1"},
     "expires_after.seconds"),
])
def test_bad_fields_name_the_field(fields: dict[str, str], param: str) -> None:
    with pytest.raises(ApiError) as refused:
        upload_terms(fields)
    assert (refused.value.status, refused.value.param) == (400, param)


def test_malformed_forms_are_refused() -> None:
    # a body that is not multipart, and one with two file parts
    with pytest.raises(ApiError) as not_form:
        UploadForm(_pieces(b"{}"), "application/json")
    assert not_form.value.status == 400
    body, content_type = _form([("file", ("a", b"a" * 10)), ("file", ("b", b"b"))])
    with pytest.raises(ApiError) as two:
        asyncio.run(_read(body, content_type))
    assert (two.value.status, two.value.param) == (400, "file")
    # and fields past their bound are a 413 before any file is read
    body, content_type = _form([("purpose", (None, b"x" * (MAX_FIELD_BYTES + 1))), ("file", ("a", b"a"))])
    with pytest.raises(ApiError) as big:
        asyncio.run(_read(body, content_type))
    assert big.value.status == 413


def test_field_and_file_names_beyond_latin_1_come_through_whole() -> None:
    # given a form whose field name and file name hold characters beyond latin-1 (schemathesis sent one: a 500)
    body = (b'--b\r\nContent-Disposition: form-data; name="\xf1\xa3\x9d\xab\xe2\x82\xac"\r\n\r\nx\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="r\xc3\xa9sum\xc3\xa9 \xe2\x82\xac.txt"\r\n'
            b'\r\nhello\r\n--b--\r\n')
    # when it is read, then each name is the UTF-8 text it was sent as, and the file is found whole
    form, found, chunks = asyncio.run(_read(body, "multipart/form-data; boundary=b"))
    assert found and b"".join(chunks) == b"hello"
    assert form.filename == "résumé €.txt"
    assert form.fields == {"\U0006376b€": "x"}

"""File understanding in the inference service, on real parts where it matters: real documents (a PDF with a
text layer, a scanned PDF, a DOCX, made in the test), the real markitdown extractor, the real files service over
the data-dir blob store (its metadata in memory), the real cloud adapters' wire bodies."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.blob_local import LocalBlobStore
from isthmus.adapters.cloud import anthropic_provider, openai_provider
from isthmus.adapters.extract_markitdown import MarkitdownExtractor
from isthmus.errors import ApiError
from isthmus.ports.extraction import ExtractedText
from isthmus.ports.files import FileRecord
from isthmus.services.files import FileService
from isthmus.services.inference.file_parts import ExtractionCache, FileParts
from isthmus.services.inference.inference import InferenceService
from isthmus.services.inference.token_bounds import PER_IMAGE_TOKENS, byte_bound
from isthmus.services.tenancy.gate import Principal
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import FilePart, InternalRequest, Message, Part, TextPart
from tests.support.documents import docx, scanned_pdf, text_pdf
from tests.support.files_memory import MemoryFileMetaStore, chunks_of

PDF = text_pdf(["The launch code is PELICAN-42.", "Keep it secret."])
DOCX = docx(["Quarterly revenue rose to 7 million euros."])


class CountingExtractor:
    """The real markitdown extractor, counting its calls (to prove the cache)."""

    def __init__(self) -> None:
        self.calls = 0
        self.inner = MarkitdownExtractor()

    def extract(self, data: bytes, *, media_type: str, filename: str) -> ExtractedText:
        self.calls += 1
        return self.inner.extract(data, media_type=media_type, filename=filename)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture()
def files(tmp_path: Path) -> FileService:
    return FileService(LocalBlobStore(tmp_path / "files"), MemoryFileMetaStore())


def _upload(files: FileService, data: bytes, filename: str, content_type: str, owner: str = "alice") -> FileRecord:
    record: FileRecord = _run(files.create(owner_id=owner, filename=filename, purpose="user_data",
                                           content_type=content_type, chunks=chunks_of(data)))
    return record


def _request(*parts: Part) -> InternalRequest:
    return InternalRequest(model="m", messages=[Message(role="user", content=[TextPart(text="Summarise."), *parts])])


def _texts(request: InternalRequest) -> list[str]:
    return [p.text for p in request.messages[0].content if isinstance(p, TextPart)]


def test_uploaded_pdf_and_docx_become_their_text_for_a_text_only_model(files: FileService) -> None:
    # given a PDF and a DOCX uploaded by alice
    pdf = _upload(files, PDF, "launch.pdf", "application/pdf")
    doc = _upload(files, DOCX, "q3.docx", "application/octet-stream")
    extractor = CountingExtractor()
    parts = FileParts(lambda: files, extractor)
    request = _request(FilePart(file_id=pdf.file_id), FilePart(file_id=doc.file_id))
    # when her request is prepared for a text-only backend
    prepared = _run(parts.prepare(request, owner_id="alice", native=False))
    # then each file is its text, wrapped with its name, in place; no file part is left
    texts = _texts(prepared)
    assert texts[0] == "Summarise."
    assert texts[1].startswith("[Attached file: launch.pdf]\n") and "PELICAN-42" in texts[1]
    assert texts[1].endswith("[End of launch.pdf]")
    assert "Quarterly revenue rose to 7 million euros." in texts[2] and "q3.docx" in texts[2]
    assert not any(isinstance(p, FilePart) for p in prepared.messages[0].content)
    # and asking again extracts nothing twice (cached per file)
    assert extractor.calls == 2
    _run(parts.prepare(request, owner_id="alice", native=False))
    assert extractor.calls == 2 and len(parts.cache) == 2


def test_concurrent_requests_for_one_file_share_one_extraction(files: FileService) -> None:
    # given one uploaded PDF, nothing extracted yet
    pdf = _upload(files, PDF, "launch.pdf", "application/pdf")
    extractor = CountingExtractor()
    parts = FileParts(lambda: files, extractor)

    async def many() -> list[InternalRequest]:
        request = _request(FilePart(file_id=pdf.file_id))
        return await asyncio.gather(*(parts.prepare(request, owner_id="alice", native=False) for _ in range(5)))

    # when five requests attaching it arrive at once
    prepared = _run(many())
    # then it was extracted once, and every request got its text
    assert extractor.calls == 1
    assert all("PELICAN-42" in _texts(p)[1] for p in prepared)


def test_a_scanned_pdf_is_named_as_unreadable_not_dropped() -> None:
    # given a PDF that is only a picture, sent inline
    part = FilePart(data=base64.b64encode(scanned_pdf()).decode(), media_type="application/pdf",
                    filename="scan.pdf")
    # when prepared for a text-only model
    prepared = _run(FileParts(lambda: None, MarkitdownExtractor()).prepare(_request(part), owner_id=None,
                                                                           native=False))
    # then the model is told that no text could be read from it, and why
    note = _texts(prepared)[1]
    assert note.startswith("[Attached file: scan.pdf. No text could be extracted from it")
    assert "scanned or image-only PDF" in note


def test_another_users_or_an_unknown_file_is_404_and_bad_inline_data_400(files: FileService) -> None:
    pdf = _upload(files, PDF, "launch.pdf", "application/pdf", owner="alice")
    parts = FileParts(lambda: files, MarkitdownExtractor())
    # when bob references alice's file, or anyone a file that does not exist
    for owner, file_id in (("bob", pdf.file_id), ("alice", "file-nope")):
        with pytest.raises(ApiError) as caught:
            _run(parts.prepare(_request(FilePart(file_id=file_id)), owner_id=owner, native=False))
        # then it is a 404 naming the file and where it was referenced
        assert caught.value.status == 404 and caught.value.code == "file_not_found"
        assert file_id in caught.value.message and caught.value.param == "messages.0.content.1"
    # and inline data that is not base64 is a 400
    with pytest.raises(ApiError) as bad:
        _run(parts.prepare(_request(FilePart(data="%%%not-base64", filename="x.pdf")), owner_id=None, native=False))
    assert bad.value.status == 400
    # and a file_id without a files store says so
    with pytest.raises(ApiError) as none:
        _run(FileParts(lambda: None, MarkitdownExtractor()).prepare(_request(FilePart(file_id=pdf.file_id)),
                                                                    owner_id=None, native=False))
    assert none.value.status == 400 and "file_data" in none.value.message


def test_for_a_native_reader_our_file_id_becomes_inline_data_and_inline_data_goes_on_unchanged(
        files: FileService) -> None:
    pdf = _upload(files, PDF, "launch.pdf", "application/pdf")
    inline = FilePart(data=base64.b64encode(DOCX).decode(), media_type="application/octet-stream", filename="q.docx")
    prepared = _run(FileParts(lambda: files, MarkitdownExtractor()).prepare(
        _request(FilePart(file_id=pdf.file_id), inline), owner_id="alice", native=True))
    content = prepared.messages[0].content
    # then the stored file is inline base64 with its type and name (the provider cannot see our store)
    assert content[1] == FilePart(data=base64.b64encode(PDF).decode(), media_type="application/pdf",
                                  filename="launch.pdf")
    # and the inline one is exactly what came in
    assert content[2] == inline


def test_the_cloud_adapters_write_file_blocks_in_their_wire() -> None:
    data = base64.b64encode(PDF).decode()
    request = _request(FilePart(data=data, media_type="application/pdf", filename="launch.pdf"))
    # OpenAI chat: a file part with a data URL
    body = openai_provider.to_body(request, "gpt-up", stream=False)
    assert body["messages"][0]["content"][1] == {
        "type": "file", "file": {"file_data": f"data:application/pdf;base64,{data}", "filename": "launch.pdf"}}
    # Anthropic: a base64 document block titled with the file name
    body = anthropic_provider.to_body(request, "claude-up", stream=False)
    assert body["messages"][0]["content"][1] == {
        "type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data},
        "title": "launch.pdf"}


def test_extraction_cache_is_bounded_by_bytes() -> None:
    cache = ExtractionCache(max_bytes=100)
    cache.put("a", ExtractedText("x" * 40))
    cache.put("b", ExtractedText("y" * 40))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", ExtractedText("z" * 40))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.size <= 100
    cache.put("huge", ExtractedText("h" * 500))  # larger than the whole cache: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 2


# ---- the budget hold counts the text the model will see -------------------------------------------------------

class CountingBackend:
    """An agent-protocol backend whose tokenizer records what it was asked to count."""

    name = "agent:test"

    def __init__(self) -> None:
        self.counted: list[TokenizeRequest] = []

    async def prompt_count(self, request: TokenizeRequest) -> TokenizeResponse:
        self.counted.append(request)
        chars = sum(len(p.text) for m in request.messages for p in m.content if isinstance(p, TextPart))
        return TokenizeResponse(prompt_tokens=chars, model="m", context_length=100_000, default_max_tokens=64)


class OneBackend:
    def __init__(self, backend: Any) -> None:
        self.backend = backend

    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[Any, InternalRequest]:
        return self.backend, request


class BoundingGate:
    """A gate that takes the hold's bound, as the tenancy gate does for a priced model."""

    def __init__(self) -> None:
        self.input_tokens: list[int] = []

    async def admit(self, principal: Principal, *, model: str, endpoint: str, input_tokens_estimate: int = 0,
                    max_output_tokens: int = 0, bound: Any = None) -> Any:
        self.input_tokens.append((await bound()).input_tokens)
        return None


def test_the_hold_bound_is_computed_over_the_extracted_text(files: FileService) -> None:
    # given alice's PDF referenced by id, and a gate that holds by the backend's own prompt count
    pdf = _upload(files, PDF, "launch.pdf", "application/pdf")
    backend, gate = CountingBackend(), BoundingGate()
    service = InferenceService(OneBackend(backend), gate,  # type: ignore[arg-type]
                               FileParts(lambda: files, MarkitdownExtractor()))
    alice = Principal(kind="key", key_id="k1", user_id="alice")
    # when her request is admitted
    call = _run(service.begin(alice, _request(FilePart(file_id=pdf.file_id)), endpoint="/v1/chat/completions",
                              request_id="r1"))
    # then the tokenizer counted the extracted text, and the hold is that count, not the reference's
    counted = [p.text for p in backend.counted[0].messages[0].content if isinstance(p, TextPart)]
    assert "PELICAN-42" in counted[1]
    assert gate.input_tokens == [sum(len(text) for text in counted)]
    # and the backend gets the same request that was counted
    assert "PELICAN-42" in _texts(call.request)[1]


def test_count_tokens_counts_the_extracted_text(files: FileService) -> None:
    # given a backend that tokenizes, and alice's PDF
    pdf = _upload(files, PDF, "launch.pdf", "application/pdf")

    class Tokenizing(CountingBackend):
        async def count_tokens(self, request: TokenizeRequest) -> int:
            return (await self.prompt_count(request)).prompt_tokens

    backend = Tokenizing()
    service = InferenceService(OneBackend(backend), None, FileParts(lambda: files, MarkitdownExtractor()))
    # when /v1/messages/count_tokens counts a message that attaches it
    request = TokenizeRequest(messages=_request(FilePart(file_id=pdf.file_id)).messages)
    counted = _run(service.count_tokens("m", request, Principal(kind="key", key_id="k1", user_id="alice")))
    # then the count is over the text the model would read
    texts = [p.text for p in backend.counted[0].messages[0].content if isinstance(p, TextPart)]
    assert "PELICAN-42" in texts[1] and counted == sum(len(text) for text in texts)


def test_a_bad_file_reference_is_refused_before_anything_is_held(files: FileService) -> None:
    backend, gate = CountingBackend(), BoundingGate()
    service = InferenceService(OneBackend(backend), gate,  # type: ignore[arg-type]
                               FileParts(lambda: files, MarkitdownExtractor()))
    with pytest.raises(ApiError) as caught:
        _run(service.begin(Principal(kind="key", key_id="k1", user_id="bob"), _request(FilePart(file_id="file-x")),
                           endpoint="/v1/chat/completions", request_id="r2"))
    assert caught.value.status == 404
    assert gate.input_tokens == [] and backend.counted == []


def test_the_byte_bound_covers_a_document_sent_natively() -> None:
    # given a document inlined for a cloud alias that reads it (no tokenizer of ours: the byte bound)
    data = base64.b64encode(PDF).decode()
    with_doc = _request(FilePart(data=data, media_type="application/pdf", filename="launch.pdf"))
    # then its bound covers the encoded document and a page-image allowance on top of the text alone
    assert byte_bound(with_doc) >= byte_bound(_request()) + len(data) + PER_IMAGE_TOKENS

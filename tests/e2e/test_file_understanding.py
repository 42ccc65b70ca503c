"""File understanding end to end: real documents made in the test (a PDF with a text layer, a DOCX, a scanned
PDF) uploaded with the openai SDK through the edge's /v1/files (its data dir, the files table on DynamoDB Local),
then referenced from the official SDKs through the edge (asgi and lambda modes):

- to the real SmolLM2 agent (text-only): the extracted text is what the agent received (observed by a recording
  relay between the edge and the agent, and the agent's own count of that prompt equals the answer's
  prompt_tokens), and an answer is produced;
- to a cloud alias published with the ``documents`` capability (fake provider on loopback): the file block is
  forwarded in the provider's wire, our file id turned into inline data;
- an unknown file id is a 404 in the caller's dialect.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.documents import docx, scanned_pdf, text_pdf
from tests.support.fake_providers import FakeProviders, put_providers
from tests.support.recording_relay import RecordingRelay

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "sk-e2e-" + uuid.uuid4().hex
PDF = text_pdf(["The launch code is PELICAN-42."])
DOCX = docx(["The meeting moved to Thursday at noon."])


@pytest.fixture(scope="module")
def relay(smol_agent: AgentProcess) -> Iterator[RecordingRelay]:
    server = RecordingRelay(smol_agent.base).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def files_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge-files")


DOCUMENTS = (("launch.pdf", PDF, "application/pdf"),
             ("meeting.docx", DOCX, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
             ("scan.pdf", scanned_pdf(), "application/pdf"))


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def gateway(request: pytest.FixtureRequest, ddb_tables: str, relay: RecordingRelay, fake: FakeProviders,
            files_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    key_file = tmp_path_factory.mktemp("edge-keys") / "provider.key"
    proc, base = start_edge(request.param, env={
        "ISTHMUS_DEFAULT_AGENT_URL": relay.base, "ISTHMUS_FILES_DIR": str(files_dir),
        "ISTHMUS_LOCAL_KEY_FILE": str(key_file), "ISTHMUS_CLOUD_CATALOG_SECONDS": "0"})
    tag = f"{request.param}{uuid.uuid4().hex[:4]}"
    try:
        providers = {
            f"gpt-{tag}": {"template": "openai", "api_base": fake.openai_base, "api_key": KEY, "published": [
                {"alias": f"{tag}:gpt-docs", "upstream_model": f"gpt-docs-{tag}",
                 "capabilities": ["chat", "documents"]},
                {"alias": f"{tag}:gpt-text", "upstream_model": f"gpt-text-{tag}", "capabilities": ["chat"]}]},
            f"claude-{tag}": {"template": "anthropic", "api_base": fake.anthropic_base, "api_key": KEY, "published": [
                {"alias": f"{tag}:claude-docs", "upstream_model": f"claude-docs-{tag}",
                 "capabilities": ["chat", "documents"]}]},
        }
        put_providers(base, providers)
        yield base, tag
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def uploaded(gateway: tuple[str, str]) -> dict[str, str]:
    """The documents, uploaded with the openai SDK through the edge's /v1/files: name -> file id."""
    client = _oai(gateway)
    return {name: client.files.create(file=(name, data, kind), purpose="user_data").id
            for name, data, kind in DOCUMENTS}


def _oai(gateway: tuple[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway[0]}/v1", api_key="dummy", max_retries=0, timeout=180)


def _claude(gateway: tuple[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway[0], api_key="dummy", max_retries=0, timeout=180)


def _user_texts(generated: dict[str, Any]) -> list[str]:
    user = [m for m in generated["messages"] if m["role"] == "user"][-1]
    assert all(part["type"] == "text" for part in user["content"]), "a file part reached the text-only agent"
    return [part["text"] for part in user["content"]]


def test_uploaded_pdf_and_docx_reach_the_local_models_prompt_as_text(
        gateway: tuple[str, str], uploaded: dict[str, str], relay: RecordingRelay,
        smol_agent: AgentProcess) -> None:
    # given a PDF and a DOCX uploaded through the files service
    pdf, doc = uploaded["launch.pdf"], uploaded["meeting.docx"]
    # when a chat request references both by id, to the local text-only model
    answer = _oai(gateway).chat.completions.create(model="default", max_tokens=12, messages=[{
        "role": "user", "content": [{"type": "text", "text": "What is the launch code?"},
                                    {"type": "file", "file": {"file_id": pdf}},
                                    {"type": "file", "file": {"file_id": doc}}]}])
    # then an answer is produced
    assert answer.choices[0].message.content and answer.usage is not None
    # and the agent received each file as its extracted text, wrapped with its name
    generated = relay.generated[-1]
    texts = _user_texts(generated)
    assert texts[0] == "What is the launch code?"
    assert texts[1] == "[Attached file: launch.pdf]\nThe launch code is PELICAN-42.\n[End of launch.pdf]"
    assert texts[2] == "[Attached file: meeting.docx]\nThe meeting moved to Thursday at noon.\n[End of meeting.docx]"
    # and that is the prompt the model read: the agent's own count of it is the answer's prompt_tokens
    probe = {k: generated[k] for k in ("messages", "tools", "tool_choice", "enable_thinking", "reasoning_effort")
             if generated.get(k) is not None}
    counted = smol_agent.client.post("/agent/v1/tokenize", json=probe).json()["prompt_tokens"]
    assert answer.usage.prompt_tokens == counted


def test_anthropic_documents_and_a_scanned_pdf_reach_the_local_model(
        gateway: tuple[str, str], uploaded: dict[str, str], relay: RecordingRelay) -> None:
    # given an inline PDF document block and an uploaded scanned PDF (no text layer)
    message = _claude(gateway).messages.create(model="default", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "document", "title": "inline.pdf",
         "source": {"type": "base64", "media_type": "application/pdf", "data": base64.b64encode(PDF).decode()}},
        {"type": "document", "source": {"type": "file", "file_id": uploaded["scan.pdf"]}},
        {"type": "text", "text": "Summarise."}]}],
        extra_headers={"anthropic-beta": "files-api-2025-04-14"})
    # then an answer is produced
    assert message.content and message.usage.input_tokens > 0
    texts = _user_texts(relay.generated[-1])
    # and the inline PDF reached the prompt as text, and the scanned one as a clear note, not silence
    assert "The launch code is PELICAN-42." in texts[0] and "inline.pdf" in texts[0]
    assert texts[1].startswith("[Attached file: scan.pdf. No text could be extracted from it")
    assert "scanned or image-only PDF" in texts[1]
    # and count_tokens counts the document as the model reads it (its text), not as nothing
    question: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "Summarise."}]}]
    with_doc: list[Any] = [{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": uploaded["launch.pdf"]}},
        {"type": "text", "text": "Summarise."}]}]
    alone = _claude(gateway).messages.count_tokens(model="default", messages=question).input_tokens
    attached = _claude(gateway).messages.count_tokens(model="default", messages=with_doc).input_tokens
    assert attached - alone >= 10  # "[Attached file: launch.pdf] The launch code is PELICAN-42. [End of ...]"


def test_a_document_capable_alias_receives_the_file_block(gateway: tuple[str, str], fake: FakeProviders,
                                                          uploaded: dict[str, str]) -> None:
    tag = gateway[1]
    pdf_b64 = base64.b64encode(PDF).decode()
    inline = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf_b64}", "filename": "x.pdf"}}
    content = [{"type": "text", "text": "Read these."}, inline,
               {"type": "file", "file": {"file_id": uploaded["launch.pdf"]}}]
    messages: list[Any] = [{"role": "user", "content": content}]
    # when the openai SDK sends an inline file block and one of our file ids to a documents alias
    answer = _oai(gateway).chat.completions.create(model=f"{tag}:gpt-docs", max_tokens=8, messages=messages)
    assert answer.choices[0].message.content
    sent = fake.last(f"gpt-docs-{tag}")["body"]["messages"][0]["content"]
    # then the provider gets the inline block unchanged, and our file id as the file's own data
    assert sent[1] == inline
    assert sent[2] == {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf_b64}",
                                                "filename": "launch.pdf"}}
    # when the same goes to an alias that does not read documents, then it gets the text instead
    _oai(gateway).chat.completions.create(model=f"{tag}:gpt-text", max_tokens=8, messages=messages)
    sent_text = fake.last(f"gpt-text-{tag}")["body"]["messages"][0]["content"]
    assert isinstance(sent_text, str)  # text only: the adapter sends it as one string
    assert "[Attached file: launch.pdf]\nThe launch code is PELICAN-42.\n[End of launch.pdf]" in sent_text
    # when the anthropic SDK references our file in a document block to an Anthropic documents alias
    _claude(gateway).messages.create(model=f"{tag}:claude-docs", max_tokens=8, messages=[{"role": "user", "content": [
        {"type": "document", "source": {"type": "file", "file_id": uploaded["launch.pdf"]}},
        {"type": "text", "text": "Read it."}]}], extra_headers={"anthropic-beta": "files-api-2025-04-14"})
    block = fake.last(f"claude-docs-{tag}")["body"]["messages"][0]["content"][0]
    # then the provider gets a base64 document block (it cannot see our store)
    assert block == {"type": "document", "title": "launch.pdf",
                     "source": {"type": "base64", "media_type": "application/pdf", "data": pdf_b64}}


def test_an_unknown_file_is_a_404_in_each_dialect(gateway: tuple[str, str], relay: RecordingRelay) -> None:
    sent_before = len(relay.generated)
    with pytest.raises(openai.NotFoundError, match="file-doesnotexist"):
        _oai(gateway).chat.completions.create(model="default", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "file", "file": {"file_id": "file-doesnotexist"}}]}])
    with pytest.raises(anthropic.NotFoundError, match="file-doesnotexist"):
        _claude(gateway).messages.create(model="default", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "file", "file_id": "file-doesnotexist"}}]}])
    assert len(relay.generated) == sent_before  # the model never saw either

"""Issue 14 through the real edge on loopback: a 50 MB body is refused before it is read, 20,000 content blocks
and a 10 MB prompt are refused by the agent before it renders or tokenizes them, and its memory comes back."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from tests.conftest import SharedEdges
from tests.support.agents import AgentProcess

pytestmark = pytest.mark.e2e
MIB = 1024 * 1024
BOUND_S = 30  # a generous upper bound on every wait here (the probe saw 55 s before the fix), not a target


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def edge(request: pytest.FixtureRequest, smol_agent: AgentProcess, shared_edges: SharedEdges) -> str:
    # the same edge as test_sdk_inference's (only requests are sent to it)
    return shared_edges.get(request.param, {"ISTHMUS_DEFAULT_AGENT_URL": smol_agent.base})


def declared_but_unsent(base: str, path: str, declared: int) -> tuple[int, Any]:
    """Declare ``declared`` bytes, send 64 KiB of them, and read the answer (a server that waited for the
    whole body would time out here)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=BOUND_S) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {declared}\r\n\r\n".encode() + b'{"model":"' + b"x" * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_50mb_body_is_refused_before_it_is_read(edge: str) -> None:
    # given a client that declares 50 MB and sends 64 KiB: then 413 in the caller's dialect at once
    status, body = declared_but_unsent(edge, "/v1/chat/completions", 50 * MIB)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    status, body = declared_but_unsent(edge, "/v1/messages", 50 * MIB)
    assert status == 413 and body["error"]["type"] == "request_too_large"
    # and a client that really sends the 50 MB gets the same answer
    big = b'{"model":"default","messages":[{"role":"user","content":"' + b"x" * (50 * MIB) + b'"}]}'
    r = httpx.post(f"{edge}/v1/chat/completions", content=big, headers={"content-type": "application/json"},
                   timeout=BOUND_S)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_wrong_methods_are_405_and_unknown_v1_paths_404_in_the_dialect(edge: str) -> None:
    r = httpx.get(f"{edge}/v1/chat/completions")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["error"]["code"] == "method_not_allowed"
    r = httpx.get(f"{edge}/api/v1/messages")
    assert r.status_code == 405 and r.json()["type"] == "error"
    r = httpx.post(f"{edge}/v1/assistants")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_body_that_is_not_utf8_is_a_400_in_both_modes(edge: str) -> None:
    # the Lambda bridge passes it base64-encoded (as API Gateway does) instead of failing to decode it
    r = httpx.post(f"{edge}/v1/chat/completions", content=b'{"model": "\xff"}',
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_20000_content_blocks_are_refused_without_holding_the_queue(edge: str, smol_agent: AgentProcess) -> None:
    # given the probe's 20,000 tiny content blocks in one Anthropic message
    blocks = [{"type": "text", "text": "a"} for _ in range(20_000)]
    body = {"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": blocks}]}
    r = httpx.post(f"{edge}/v1/messages", json=body, timeout=BOUND_S)
    # then a 400 in Anthropic's shape naming the cap
    assert r.status_code == 400, r.text[:300]
    assert r.json()["type"] == "error" and "ISTHMUS_AGENT_MAX_PARTS" in r.json()["error"]["message"]
    # and nobody is queued behind it: the agent is idle, and a small request is answered
    assert smol_agent.status()["queue_depth"] == 0
    small = {"model": "default", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{edge}/v1/messages", json=small, timeout=BOUND_S).status_code == 200


def test_a_10mb_prompt_is_refused_before_tokenizing_and_the_agent_keeps_its_memory(
        edge: str, smol_agent: AgentProcess) -> None:
    before = smol_agent.status()["rss_bytes"]
    # given a 10 MB prompt (under the 16 MiB body limit, far over SmolLM2's 8192-token context)
    body = {"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "word " * (2 * MIB)}]}
    r = httpx.post(f"{edge}/v1/chat/completions", json=body, timeout=BOUND_S)
    # then a 400 naming the context, in OpenAI's shape (the gateway's agent client relays the agent's message)
    assert r.status_code == 400, r.text[:300]
    assert "context of 8192 tokens" in r.json()["error"]["message"]
    # and the agent's RSS is back near where it was (the probe's 50 MB chat left it 3.3 GiB up)
    after = smol_agent.wait_for(lambda s: s["rss_bytes"] < before + 256 * MIB, timeout=BOUND_S)["rss_bytes"]
    assert after < before + 256 * MIB

"""The budget hold bounds the real cost (issue 13): 200 concurrent requests race one small budget through a keyed
edge (DynamoDB Local, the real SmolLM2 agent, a fake cloud provider on loopback). Whatever the prompt's shape, the
user's spend never passes max_budget, every hold comes back, every request has its usage row, and as many are
admitted as the budget allows at the real cost (within one)."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus import settings, wiring
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import query_all
from isthmus.services.inference.token_bounds import byte_bound, passthrough_bound
from isthmus_contracts.internal import InternalRequest
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.fake_providers import FakeProviders
from tests.support.waiting import poll

pytestmark = pytest.mark.integration

MASTER = "sk-bound-master"
RATE = Decimal(1000)  # USD per million tokens, input and output alike (the setup)
MILLION = Decimal(1_000_000)
MAX_TOKENS = 2
RACERS = 200
SYSTEM = ("You are the support assistant of a small bookshop. Answer in one short sentence, politely, and never "
          "invent titles, prices or opening hours: when you do not know, say so and suggest calling the shop. "
          "Customers may ask about orders, deliveries, returns, gift cards and events; use the tools to look "
          "orders up and to check stock before you answer anything about them.")
TOOLS = [{"type": "function", "function": {
    "name": "lookup_order", "description": "Find an order by its number and return its status and items",
    "parameters": {"type": "object", "properties": {"order_number": {"type": "string"},
                                                    "email": {"type": "string"}}, "required": ["order_number"]}}},
    {"type": "function", "function": {
        "name": "check_stock", "description": "How many copies of a book the shop has, by ISBN or title",
        "parameters": {"type": "object", "properties": {"isbn": {"type": "string"}, "title": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def edge(ddb_tables: str, smol_agent: AgentProcess, fake: FakeProviders,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    key_file: Path = tmp_path_factory.mktemp("bound-keys") / "provider.key"
    proc, base = start_edge("asgi", env={"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_DEFAULT_AGENT_URL": smol_agent.base,
                                         "ISTHMUS_LOCAL_KEY_FILE": str(key_file),
                                         "ISTHMUS_CLOUD_CATALOG_SECONDS": "0"})
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
            yield admin
    finally:
        stop(proc)


def priced(edge: httpx.Client, model: str) -> None:
    edge.post("/v1/pricing", json={"model_key": model, "input_price_per_million": str(RATE),
                                   "output_price_per_million": str(RATE)}).raise_for_status()


def priced_alias(edge: httpx.Client, fake: FakeProviders, name: str, alias: str, upstream: str) -> None:
    """An OpenAI-protocol provider on the loopback fake publishing ``alias`` for ``upstream``, priced at RATE."""
    resp = edge.put(f"/admin/providers/{name}", json={
        "template": "openai", "api_base": fake.openai_base, "api_key": f"sk-{name}",
        "published": [{"alias": alias, "upstream_model": upstream}], "max_retries": 0})
    assert resp.status_code == 200, resp.text
    priced(edge, alias)


def tenant(edge: httpx.Client, max_budget: Decimal) -> tuple[str, str]:
    """A budget, a user on it and a key for that user: (user_id, key)."""
    budget = edge.post("/v1/budgets", json={"max_budget": str(max_budget), "budget_duration_sec": 86400}).json()
    user_id = f"bound-{uuid.uuid4().hex[:8]}"
    edge.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
    return user_id, str(edge.post("/v1/keys", json={"user_id": user_id}).json()["key"])


def usage_rows(user_id: str) -> list[dict[str, Any]]:
    return list(query_all(dynamodb.client(), settings.table_name("usage"), IndexName="by_user",
                          KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": {"S": user_id}}))


async def race(base: str, key: str, bodies: list[dict[str, Any]]) -> list[int]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=300,
                                 limits=limits) as client:
        async def one(body: dict[str, Any]) -> int:
            if body.get("stream"):
                async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                    await resp.aread()
                    return resp.status_code
            return (await client.post("/v1/chat/completions", json=body)).status_code

        return list(await asyncio.gather(*(one(b) for b in bodies)))


def settled(user_id: str, requests: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The user once every request has its row and every hold (and budget lease) has gone back."""
    def all_rows() -> list[dict[str, Any]] | None:
        rows = usage_rows(user_id)
        return rows if len(rows) >= requests else None

    def released() -> dict[str, Any] | None:
        user = wiring.stores().users.get(user_id)
        return user if user is not None and user["reserved"] == 0 else None

    rows = poll(all_rows, timeout=60)
    return poll(released, timeout=60), rows


def exact_prompt_tokens(agent: AgentProcess, user_text: str, *, system: str | None = None,
                        tools: list[dict[str, Any]] | None = None) -> int:
    messages = ([{"role": "system", "content": [{"type": "text", "text": system}]}] if system else [])
    messages.append({"role": "user", "content": [{"type": "text", "text": user_text}]})
    probe = {"messages": messages, "tools": [t["function"] for t in tools or []]}
    resp = agent.client.post("/agent/v1/tokenize", json=probe)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["prompt_tokens"])


def check_local_race(edge: httpx.Client, agent: AgentProcess, bodies: list[dict[str, Any]], prompt_tokens: int,
                     fits: int) -> None:
    """Given a budget of ``fits`` + 1/2 exact holds, when RACERS requests race it, then the money holds."""
    hold = (prompt_tokens + MAX_TOKENS) * RATE / MILLION
    max_budget = hold * fits + hold / 2
    user_id, key = tenant(edge, max_budget)
    codes = asyncio.run(race(str(edge.base_url), key, bodies))
    user, rows = settled(user_id, len(bodies))
    # then the spend is within the budget and nothing is left reserved
    assert user["spend"] <= user["max_budget"] == max_budget
    assert user["reserved"] == 0 and user["headroom"] == user["max_budget"] - user["spend"]
    # and there is one usage row per request, admitted or refused
    admitted = [r for r in rows if r["status"] != "refused"]
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(rows) == len(bodies) and len(admitted) == codes.count(200)
    assert {r["status_code"] for r in refused} == {403} and len(refused) == codes.count(403)
    assert all(r["status"] == "success" for r in admitted)
    # and each was held at its exact prompt count (the agent's own usage says the same number)
    assert {int(r["prompt_tokens"]) for r in admitted} == {prompt_tokens}
    assert all(0 < int(r["completion_tokens"]) <= MAX_TOKENS for r in admitted)
    assert user["spend"] == sum((r["cost"] for r in admitted), Decimal(0))
    assert not any("unbilled_cost" in r for r in admitted)
    # and as many were admitted as the budget allows at the real cost (within one)
    real = sum((r["cost"] for r in admitted), Decimal(0)) / len(admitted)
    assert fits - 1 <= len(admitted) <= fits
    assert math.floor(max_budget / real) - 1 <= len(admitted)


def test_five_character_prompts_race_a_small_budget(edge: httpx.Client, smol_agent: AgentProcess) -> None:
    # given the local model priced at 1000 USD per million tokens (a 5-character prompt is ~34 tokens once
    # the chat template and SmolLM2's default system prompt are applied: 4x the old chars/4 estimate)
    priced(edge, smol_agent.status()["model"])
    bodies = [{"model": "default", "messages": [{"role": "user", "content": f"q {i:03d}"}],
               "max_tokens": MAX_TOKENS, "stream": i % 2 == 1} for i in range(RACERS)]
    prompt_tokens = exact_prompt_tokens(smol_agent, "q 000")
    assert prompt_tokens > 5 * 4  # digits are one token each: every one of these prompts has this count
    check_local_race(edge, smol_agent, bodies, prompt_tokens, fits=5)


def test_long_system_prompt_and_tools_race_a_small_budget(edge: httpx.Client, smol_agent: AgentProcess) -> None:
    priced(edge, smol_agent.status()["model"])
    bodies = [{"model": "default", "messages": [{"role": "system", "content": SYSTEM},
                                                {"role": "user", "content": f"order {i:03d}?"}],
               "tools": TOOLS, "max_tokens": MAX_TOKENS} for i in range(RACERS)]
    prompt_tokens = exact_prompt_tokens(smol_agent, "order 000?", system=SYSTEM, tools=TOOLS)
    check_local_race(edge, smol_agent, bodies, prompt_tokens, fits=3)


def test_cjk_prompts_race_a_small_budget(edge: httpx.Client, smol_agent: AgentProcess) -> None:
    priced(edge, smol_agent.status()["model"])
    bodies = [{"model": "default", "messages": [{"role": "user", "content": f"日本の首都はどこですか{i:03d}"}],
               "max_tokens": MAX_TOKENS} for i in range(RACERS)]
    prompt_tokens = exact_prompt_tokens(smol_agent, "日本の首都はどこですか000")
    check_local_race(edge, smol_agent, bodies, prompt_tokens, fits=4)


def test_cloud_alias_billing_more_than_sent_is_capped_at_the_hold(edge: httpx.Client, fake: FakeProviders) -> None:
    # given an OpenAI-protocol alias whose upstream reports 5000 prompt tokens more than it was sent
    tag = uuid.uuid4().hex[:6]
    alias, upstream = f"{tag}:gpt", f"gpt-{tag}-over5000"
    priced_alias(edge, fake, f"bound-{tag}", alias, upstream)
    text = "q 000"
    held_tokens = byte_bound(InternalRequest.model_validate(
        {"model": alias, "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]})) + MAX_TOKENS
    hold = held_tokens * RATE / MILLION
    fits = 5
    max_budget = hold * fits + hold / 2
    user_id, key = tenant(edge, max_budget)
    bodies = [{"model": alias, "messages": [{"role": "user", "content": f"q {i:03d}"}], "max_tokens": MAX_TOKENS,
               "stream": i % 2 == 1} for i in range(RACERS)]
    # when 200 requests race the budget
    codes = asyncio.run(race(str(edge.base_url), key, bodies))
    user, rows = settled(user_id, len(bodies))
    # then exactly the holds that fit were admitted, and each was charged its hold, no more
    admitted = [r for r in rows if r["status"] != "refused"]
    assert len(admitted) == fits == codes.count(200) and codes.count(403) == RACERS - fits
    assert len(rows) == RACERS
    assert all(r["cost"] == hold for r in admitted)
    # and the usage rows say what was reported and what of it went unbilled
    for r in admitted:
        reported = (int(r["prompt_tokens"]) + int(r["completion_tokens"])) * RATE / MILLION
        assert int(r["prompt_tokens"]) > 5000 and r["unbilled_cost"] == reported - hold > 0
    # and the spend never passes the budget, with nothing left reserved
    assert user["spend"] == hold * fits <= user["max_budget"]
    assert user["reserved"] == 0
    # and the provider was told the max that was held
    assert {r["body"]["max_tokens"] for r in fake.requests if r["body"].get("model") == upstream} == {MAX_TOKENS}


def test_a_request_naming_no_max_sends_the_held_max(edge: httpx.Client, fake: FakeProviders,
                                                    smol_agent: AgentProcess) -> None:
    # given a priced cloud alias and a user with room for one default-sized answer
    tag = uuid.uuid4().hex[:6]
    alias, upstream = f"{tag}:gpt", f"gpt-{tag}"
    priced_alias(edge, fake, f"nomax-{tag}", alias, upstream)
    _, key = tenant(edge, Decimal(100))
    # when a chat names no max_tokens
    resp = httpx.post(f"{edge.base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": alias, "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert resp.status_code == 200, resp.text
    # then the provider got the max the hold covered (ISTHMUS_DEFAULT_MAX_OUTPUT_TOKENS), so it cannot exceed it
    assert fake.last(upstream)["body"]["max_tokens"] == 4096
    # and a user whose budget cannot cover that default is refused, before anything is generated
    _, poor = tenant(edge, Decimal("0.5"))
    refused = httpx.post(f"{edge.base_url}/v1/chat/completions", headers={"Authorization": f"Bearer {poor}"},
                         json={"model": alias, "messages": [{"role": "user", "content": "hi"}]}, timeout=60)
    assert refused.status_code == 403
    assert fake.count(upstream) == 1


def test_passthrough_billing_more_than_sent_is_capped_at_the_hold(edge: httpx.Client, fake: FakeProviders) -> None:
    # given an embeddings alias whose upstream reports 5000 prompt tokens more than it was sent
    tag = uuid.uuid4().hex[:6]
    alias, upstream = f"{tag}:embed", f"embed-{tag}-over5000"
    priced_alias(edge, fake, f"embed-{tag}", alias, upstream)
    bodies = [{"model": alias, "input": f"q {i:03d}"} for i in range(40)]
    hold = passthrough_bound(bodies[0]) * RATE / MILLION
    user_id, key = tenant(edge, hold * 3 + hold / 2)

    async def race_embeddings() -> list[int]:
        async with httpx.AsyncClient(base_url=str(edge.base_url), headers={"Authorization": f"Bearer {key}"},
                                     timeout=60) as client:
            return [r.status_code for r in await asyncio.gather(*(client.post("/v1/embeddings", json=b)
                                                                  for b in bodies))]

    # when 40 requests race the budget
    codes = asyncio.run(race_embeddings())
    user, rows = settled(user_id, len(bodies))
    # then three holds fit, each charged its hold with the excess unbilled, and the spend is within the budget
    admitted = [r for r in rows if r["status"] != "refused"]
    assert codes.count(200) == len(admitted) == 3 and codes.count(403) == len(bodies) - 3
    assert all(r["cost"] == hold and r["unbilled_cost"] > 0 for r in admitted)
    assert user["spend"] == 3 * hold <= user["max_budget"] and user["reserved"] == 0


def test_a_byte_level_tokenizer_never_makes_more_tokens_than_bytes(smollm2_model: Path) -> None:
    """What the byte bound of cloud aliases rests on, checked on a real byte-level BPE (SmolLM2's)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(smollm2_model / "tokenizer.json"))
    texts = ["hi 12", "日本の首都はどこですか\uff1f", "🙂🙃🧪 emoji 👩‍👩‍👧", "    \n\t\t  spaces  \n\n", "ÅÉÎØÜ ß ŀ ŉ",
             "def f(x):\n    return {'a': [1, 2, 3]}", "Ωμέγα Привет مرحبا שלום नमस्ते", "0123456789" * 20,
             "<|im_start|>user\nhello<|im_end|>", "".join(chr(c) for c in range(0x2500, 0x2600))]
    for text in texts:
        assert len(tokenizer.encode(text, add_special_tokens=False).ids) <= len(text.encode("utf-8")), text

"""``POST /agent/v1/embeddings``: OpenAI's embeddings request and answer, checked here before anything reaches
the model. ``input`` is a string, a list of strings, one token array or a list of token arrays (ids of the
model's own vocabulary; [CLS]/[SEP] are added around them as around text); ``encoding_format`` ``float`` or
``base64`` (little-endian float32, as OpenAI sends it); ``dimensions`` the model's own size, or a smaller one
only for a model trained to be truncated (its recipe lists Matryoshka sizes): the leading dimensions,
renormalised. Every refusal is a 400 naming the field, in OpenAI's shape."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

from isthmus import settings
from isthmus.errors import ApiError
from local_runtime.agent.embeddings.encoder import EmbeddingModel

MAX_INPUTS = 2048  # OpenAI's limits per request: inputs, and tokens summed over them
MAX_TOTAL_TOKENS = 300_000
DEFAULT_MAX_CHARS_PER_TOKEN = 32  # no WordPiece token spans more: longer text cannot fit, refused untokenized


def _bad(message: str, param: str = "input", code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, int) and not isinstance(i, bool)
                                                           for i in value)


def parse_inputs(raw: Any) -> list[str] | list[list[int]]:
    """The inputs as texts or as token arrays (never mixed)."""
    if isinstance(raw, str) or _is_ids(raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise _bad("input: a non-empty string, a non-empty list of strings, or token arrays is required")
    if len(raw) > MAX_INPUTS:
        raise _bad(f"input: {len(raw)} items; at most {MAX_INPUTS} per request")
    if all(isinstance(item, str) for item in raw):
        empty = next((i for i, item in enumerate(raw) if not item), None)
        if empty is not None:
            raise _bad(f"input[{empty}]: must not be an empty string")
        return list(raw)
    if all(_is_ids(item) for item in raw):
        return [list(item) for item in raw]
    raise _bad("input: items must all be non-empty strings or all non-empty arrays of integer token ids")


def check_dimensions(encoder: EmbeddingModel, dimensions: Any) -> int | None:
    if dimensions is None:
        return None
    if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1:
        raise _bad("dimensions: must be a positive integer", "dimensions")
    if dimensions == encoder.dimensions:
        return None
    if dimensions < encoder.dimensions and encoder.recipe.matryoshka_dimensions:
        return dimensions
    if encoder.recipe.matryoshka_dimensions:
        raise _bad(f"dimensions: at most {encoder.dimensions} for this model", "dimensions")
    raise _bad(f"dimensions: this model's embeddings have {encoder.dimensions} dimensions and it was not trained "
               f"to be truncated; omit dimensions or send {encoder.dimensions}", "dimensions")


def _token_lists(encoder: EmbeddingModel, inputs: list[str] | list[list[int]]) -> list[list[int]]:
    limit = encoder.recipe.max_tokens
    if inputs and isinstance(inputs[0], str):
        texts = [str(t) for t in inputs]
        per_token = settings.env_positive_int("ISTHMUS_AGENT_MAX_CHARS_PER_TOKEN", DEFAULT_MAX_CHARS_PER_TOKEN)
        long = next((i for i, t in enumerate(texts) if len(t) > limit * per_token), None)
        if long is not None:
            raise _bad(f"input[{long}] is {len(texts[long])} characters, more than this model's {limit} tokens can "
                       "hold", code="context_length_exceeded")
        tokens = encoder.tokenize(texts)
    else:
        bad = next((i for ids in inputs for i in ids if not 0 <= int(i) < encoder.vocab_size), None)
        if bad is not None:
            raise _bad(f"input: token id {bad} is outside this model's vocabulary (0..{encoder.vocab_size - 1})")
        tokens = [encoder.wrap_ids([int(i) for i in ids]) for ids in inputs]
    over = next((i for i, ids in enumerate(tokens) if len(ids) > limit), None)
    if over is not None:
        raise _bad(f"input[{over}] is {len(tokens[over])} tokens; this model takes at most {limit}",
                   code="context_length_exceeded")
    total = sum(len(ids) for ids in tokens)
    if total > MAX_TOTAL_TOKENS:
        raise _bad(f"input: {total} tokens in all; at most {MAX_TOTAL_TOKENS} per request",
                   code="max_tokens_per_request")
    return tokens


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def embeddings(encoder: EmbeddingModel, model_name: str, body: Any,
                     run_on_engine: Any) -> dict[str, Any]:
    """The OpenAI answer for ``body``; ``run_on_engine(fn)`` runs ``fn`` on the engine thread (a Future)."""
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object", "body")
    if "input" not in body:
        raise _bad("input is required")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format: must be 'float' or 'base64'", "encoding_format")
    inputs = parse_inputs(body["input"])
    dimensions = check_dimensions(encoder, body.get("dimensions"))
    tokens = await asyncio.to_thread(_token_lists, encoder, inputs)
    vectors = await asyncio.wrap_future(run_on_engine(lambda: encoder.embed(tokens, dimensions)))
    used = sum(len(t) for t in tokens)
    return {"object": "list", "model": model_name,
            "data": [{"object": "embedding", "index": i, "embedding": _encoded(v, encoding)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": used, "total_tokens": used}}

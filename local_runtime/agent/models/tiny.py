"""Random-weight mlx-lm models with a small byte-level BPE tokenizer, for fast tests.

Built in about a second from a fixed seed. The chat template is Qwen-like: tools rendered in the system
turn, calls as ``<tool_call>{json}</tool_call>``, and with ``enable_thinking`` the generation prompt
opens a ``<think>`` block (without it, an empty closed block), so tests reach those code paths.
Random weights never produce an end token: stop them by ``max_tokens``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added but not "special": they must survive decoding, like Qwen's.
MARKUP_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
_CORPUS = [
    "The capital of France is Paris. The capital of Italy is Rome.",
    "What is the weather like today? It is sunny and warm in the city.",
    'Call a tool: {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}',
    "def add(a, b):\n    return a + b\n",
    "Hello! How can I help you today? I am a helpful assistant.",
    "user assistant system tool response reasoning thinking answer question",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \" _ # @ $ % & |",
]
_ARCH_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": True},
    "qwen3": {"model_type": "qwen3", "head_dim": 16, "tie_word_embeddings": True},
    "llama": {"model_type": "llama", "tie_word_embeddings": False},
}


def build_tokenizer(out: Path, vocab_size: int = 512) -> int:
    """Train a deterministic byte-level BPE on a fixed corpus; returns the vocabulary size."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
    tokenizer.save(str(out / "tokenizer.json"))
    from local_runtime.agent.models.tiny_template import CHAT_TEMPLATE as template
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": template,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return int(tokenizer.get_vocab_size())


def build_tiny_model(
    out: Path, arch: str = "qwen2", *, seed: int = 0, hidden: int = 64, layers: int = 2
) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    if arch not in _ARCH_CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(_ARCH_CONFIGS)}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    vocab = build_tokenizer(out)
    from tokenizers import Tokenizer

    eos_id = Tokenizer.from_file(str(out / "tokenizer.json")).token_to_id("<|im_end|>")
    config: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "max_position_embeddings": 262144,  # room for the never-ending generations tests hold open
        "vocab_size": vocab,
        "eos_token_id": [eos_id],
        **_ARCH_CONFIGS[arch],
    }
    model_class, args_class = _get_classes(config)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out

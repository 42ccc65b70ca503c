"""A BERT encoder in MLX (what sentence-transformers' MiniLM models are), with the parameter names of the
Hugging Face checkpoints (``embeddings.word_embeddings.weight``, ``encoder.layer.N.attention.self.query.weight``,
...), so a ``model.safetensors`` of one loads as it is. Only the encoder: no pooler, no MLM head (sentence
embeddings pool the last hidden states themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> BertConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in config.items() if k in fields})


class Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def __call__(self, ids: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])[None, :]
        # One segment per input: every token type is 0.
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, d = x.shape
        head_dim = d // self.heads

        def split(t: mx.array) -> mx.array:
            return t.reshape(b, n, self.heads, head_dim).transpose(0, 2, 1, 3)

        out = mx.fast.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                                                   scale=head_dim ** -0.5, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(b, n, d)


class Dense(nn.Module):
    """dense -> (+ residual) -> LayerNorm: BERT's ``attention.output`` and ``output`` blocks."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.self = SelfAttention(c)  # the checkpoint's name: attention.self.query, ...
        self.output = Dense(c.hidden_size, c.hidden_size, c.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def __call__(self, x: mx.array) -> mx.array:
        return nn.gelu(self.dense(x))  # BERT's "gelu" is the exact (erf) one


class Layer(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = Dense(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        h = self.attention(x, mask)
        return self.output(self.intermediate(h), h)


class Encoder(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.layer = [Layer(c) for _ in range(c.num_hidden_layers)]


class Bert(nn.Module):
    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)

    def __call__(self, ids: mx.array, attention_mask: mx.array) -> mx.array:
        """Last hidden states (batch, length, hidden) of right-padded ``ids``; ``attention_mask`` is 1 on
        tokens, 0 on padding (padding is never attended to)."""
        x = self.embeddings(ids)
        additive = mx.where(attention_mask[:, None, None, :] > 0, 0.0, -1e9).astype(x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, additive)
        return x


def load_weights(model: Bert, weights: dict[str, mx.array]) -> None:
    """The checkpoint's encoder weights into ``model`` (its pooler and buffers such as position_ids are not
    parameters of ours); a missing or misshapen weight is an error, not a silent random one."""
    from mlx.utils import tree_flatten

    wanted = dict(tree_flatten(model.parameters()))
    missing = sorted(set(wanted) - set(weights))
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} weights, e.g. {missing[0]}")
    model.load_weights([(k, weights[k].astype(mx.float32)) for k in wanted], strict=True)

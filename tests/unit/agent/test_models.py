"""Model directories: tiny random models and name/path resolution (no real model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_runtime.agent.launcher import PRELOADED_FLAG, agent_command, agent_env, find_openblas
from local_runtime.agent.models.registry import list_models, models_dir, resolve
from local_runtime.agent.models.tiny import build_tiny_model


def test_tiny_model_is_deterministic_and_loadable_by_path(tmp_path: Path) -> None:
    # given two builds with the same seed
    a = build_tiny_model(tmp_path / "a", "llama", seed=3)
    b = build_tiny_model(tmp_path / "b", "llama", seed=3)
    # then weights and tokenizer are byte-identical
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    config = json.loads((a / "config.json").read_text())
    assert config["model_type"] == "llama" and config["eos_token_id"]
    assert resolve(str(a)) == a


def test_tiny_template_supports_tools_and_thinking(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    out = build_tiny_model(tmp_path / "m", "qwen2")
    template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    assert "tool_call" in template and "enable_thinking" in template
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.encode("2024").tokens == ["2", "0", "2", "4"]  # digits split one per token
    assert tok.token_to_id("<think>") is not None


def test_models_on_disk_are_listed_with_sizes(tmp_path: Path) -> None:
    build_tiny_model(tmp_path / "models" / "tiny", "qwen2")
    assert models_dir(str(tmp_path)) == tmp_path / "models"
    [(name, path, size)] = list_models(str(tmp_path))
    assert name == "tiny" and size > 10_000
    assert resolve("tiny", str(tmp_path)) == path


def test_unknown_model_names_say_what_is_fetchable(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="smollm2-135m"):
        resolve("nope", str(tmp_path))


def test_agent_env_preloads_openblas_when_installed() -> None:
    env = agent_env({"PATH": "/bin"})
    lib = find_openblas()
    if lib is None:
        assert "LD_PRELOAD" not in env
    else:
        assert env["LD_PRELOAD"].startswith(lib) and env["OPENBLAS_NUM_THREADS"] == "1"
        assert env[PRELOADED_FLAG] == "1"
    assert agent_command("m", port=9)[-4:] == ["--host", "127.0.0.1", "--port", "9"]

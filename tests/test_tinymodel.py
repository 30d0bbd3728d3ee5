"""The tiny model directory: deterministic, GLM-4.5-shaped, every special token one id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glm45.glm_format import SPECIAL_TOKENS
from pytest_glm45.tinymodel import TinySizes, build_tiny_model, ensure_tiny_model

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


def test_build_is_deterministic(tiny, tmp_path: Path) -> None:
    build_tiny_model(tmp_path, TinySizes())
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / name).read_bytes() == (tiny.path / name).read_bytes(), name


def test_built_once_per_cache(tiny) -> None:
    again = ensure_tiny_model(tiny.path.parent)
    assert again.path == tiny.path
    assert [p.name for p in tiny.path.parent.iterdir() if p.name.startswith(".build-")] == []


def test_config_is_glm4_moe_with_sizes_the_cpu_kernels_accept(tiny) -> None:
    config = json.loads((tiny.path / "config.json").read_text())
    assert config["architectures"] == ["Glm4MoeForCausalLM"]
    assert config["model_type"] == "glm4_moe"
    assert config["max_position_embeddings"] == 131072
    assert config["head_dim"] == 64  # 16 kills the CPU attention kernel
    assert config["first_k_dense_replace"] == 1 and config["num_hidden_layers"] == 2
    assert config["n_routed_experts"] == 4 and config["n_shared_experts"] == 1


def test_every_special_token_is_one_token(tiny) -> None:
    tok = tokenizers.Tokenizer.from_file(str(tiny.path / "tokenizer.json"))
    assert tok.get_vocab_size() == json.loads((tiny.path / "config.json").read_text())["vocab_size"]
    for special in SPECIAL_TOKENS:
        assert tok.encode(special, add_special_tokens=False).ids == [tok.token_to_id(special)], special


def test_text_round_trips_through_the_tokenizer(tiny) -> None:
    tok = tokenizers.Tokenizer.from_file(str(tiny.path / "tokenizer.json"))
    text = '<think>ünïcode 😀 "q" \\ \n</think><tool_call>f\n<arg_key>k</arg_key>\n<arg_value>[1, {"a": null}]</arg_value>\n</tool_call>'
    assert tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False) == text


def test_markup_tokens_survive_skip_special_tokens(tiny) -> None:
    """vLLM drops `special` tokens from its text; the parsers need <think> and <tool_call> kept."""
    config = json.loads((tiny.path / "tokenizer_config.json").read_text())
    special = {v["content"]: v["special"] for v in config["added_tokens_decoder"].values()}
    assert special["<|user|>"] and special["<|endoftext|>"]
    assert not special["<think>"] and not special["<tool_call>"] and not special["<arg_value>"]

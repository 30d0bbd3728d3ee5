"""The tiny model directory: deterministic, GLM-4.5-shaped, every special token one id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_glm45.engine.tinymodel import (
    PERTURBED_EXPERT_SCALE,
    PERTURBED_NORM,
    TinySizes,
    build_tiny_model,
    ensure_tiny_model,
    recipe_digest,
    tiny_sizes,
    weight_arrays,
    weight_shapes,
)
from pytest_glm45.glm.glm_format import SPECIAL_TOKENS

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return ensure_tiny_model(tmp_path_factory.mktemp("cache"))


def test_build_is_deterministic(tiny, tmp_path: Path) -> None:
    build_tiny_model(tmp_path, TinySizes())
    for name in ("tokenizer.json", "config.json", "tokenizer_config.json", "chat_template.jinja", "model.safetensors"):
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


def test_weights_cover_every_tensor_of_the_checkpoint_with_seeded_values(tiny) -> None:
    from safetensors.torch import load_file as load_torch  # bf16 has no numpy dtype

    tensors = load_torch(str(tiny.path / "model.safetensors"))
    shapes = weight_shapes(tiny.sizes)
    assert {k: tuple(v.shape) for k, v in tensors.items()} == shapes
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in shapes and "model.layers.0.mlp.gate_proj.weight" in shapes
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in shapes and "lm_head.weight" in shapes
    assert str(tensors["model.layers.1.mlp.gate.weight"].dtype) == "torch.float32"
    assert str(tensors["model.embed_tokens.weight"].dtype) == "torch.bfloat16"
    assert float(tensors["model.norm.weight"].float().min()) == float(tensors["model.norm.weight"].float().max()) == 1.0
    std = float(tensors["model.layers.0.self_attn.q_proj.weight"].float().std())
    assert 0.018 < std < 0.022
    # Two tensors of one shape are not the same draw.
    assert not (tensors["model.layers.1.mlp.experts.0.up_proj.weight"] == tensors["model.layers.1.mlp.experts.1.up_proj.weight"]).all()


def test_perturbed_variant_differs_in_one_expert_and_one_norm_only() -> None:
    import numpy as np

    base, perturbed = weight_arrays(TinySizes()), weight_arrays(tiny_sizes("perturbed"))
    changed = sorted(k for k in base if not np.array_equal(base[k], perturbed[k]))
    assert changed == ["model.layers.1.mlp.experts.0.down_proj.weight", "model.layers.1.post_attention_layernorm.weight"]
    assert np.allclose(perturbed[changed[0]], base[changed[0]] * PERTURBED_EXPERT_SCALE)
    assert np.allclose(perturbed[changed[1]], PERTURBED_NORM)
    assert recipe_digest(tiny_sizes("perturbed")) != recipe_digest(TinySizes())


def test_weights_derive_from_the_sizes() -> None:
    shapes = weight_shapes(tiny_sizes("pp"))
    assert "model.layers.2.mlp.experts.0.gate_proj.weight" in shapes
    assert recipe_digest(tiny_sizes("pp")) != recipe_digest(TinySizes())

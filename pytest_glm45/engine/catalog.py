"""The model catalog: the GLM-4.5 checkpoints the kit knows, and how a user names them.

Figures are the published architecture (each checkpoint's config.json and model card); the preflight and the
roofline compute from them, so they are data here and nowhere else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Shared by every GLM-4.5 model.
VOCAB_SIZE = 151552
ATTENTION_HEADS = 96
KV_HEADS = 8
HEAD_DIM = 128
MAX_POSITION_EMBEDDINGS = 131072


@dataclass(frozen=True)
class ModelInfo:
    """One servable model: a catalog alias, or a user's hub id or local path."""

    alias: str
    checkpoint: str
    family: str  # "tiny", "air", "glm45" or "custom": the first part of a configuration id
    precision: str  # "bf16" or "fp8"
    total_params_b: float | None = None
    active_params_b: float | None = None
    layers: int | None = None
    hidden_size: int | None = None
    moe_intermediate_size: int | None = None
    routed_experts: int | None = None
    active_experts: int | None = None
    shared_experts: int | None = None
    qk_norm: bool = False
    #: the dense feed-forward width of the first layers, how many layers are dense, and the MTP layers after them
    intermediate_size: int | None = None
    first_dense_layers: int | None = None
    mtp_layers: int = 1
    max_position_embeddings: int = MAX_POSITION_EMBEDDINGS
    #: The GLM generation whose format and parsers the model has: "4.5" (and Air), "4.6" or "4.7".
    generation: str = "4.5"
    #: A tiny model's variant (`pp`: 3 layers, so pipeline parallel 2 gives each stage an MoE layer); "" otherwise.
    variant: str = ""

    @property
    def is_tiny(self) -> bool:
        """Whether this is the kit's tiny model (the embedded default)."""
        return self.family == "tiny"

    @property
    def generation_name(self) -> str:
        """The model family that known-failure entries name (`models = ["glm-4.7*"]`): `glm-4.5`, `glm-4.5-air`,
        `glm-4.6`, `glm-4.7`; a tiny variant has the generation it imitates."""
        return f"glm-{self.generation}" + ("-air" if self.family == "air" else "")

    @property
    def tool_call_parser(self) -> str:
        """vLLM's tool-call parser for this generation (the recipes): `glm47` for GLM-4.7, `glm45` otherwise."""
        return "glm47" if self.generation == "4.7" else "glm45"

    @property
    def reasoning_parser(self) -> str:
        """vLLM's reasoning parser: `glm45` for every generation (GLM-4.7's recipe too)."""
        return "glm45"

    @property
    def tool_call_format(self) -> str:
        """The tool-call format the model writes: `native` (newlines after the name and between arguments: GLM-4.5,
        GLM-4.6) or `compact` (GLM-4.7)."""
        return "compact" if self.generation == "4.7" else "native"

    @property
    def bytes_per_param(self) -> float:
        """Bytes per weight: 1 for FP8, 2 for BF16."""
        return 1.0 if self.precision == "fp8" else 2.0

    @property
    def weight_bytes(self) -> float | None:
        """Bytes of all weights in this precision (embeddings included; the MTP layer, loaded only for speculative decoding,
        is not: `preflight.mtp_draft_bytes`)."""
        if self.total_params_b is None:
            return None
        return self.total_params_b * 1e9 * self.bytes_per_param

    @property
    def active_weight_bytes(self) -> float | None:
        """Bytes of the weights one token reads in a decode step."""
        if self.active_params_b is None:
            return None
        return self.active_params_b * 1e9 * self.bytes_per_param

    @property
    def label(self) -> str:
        """The model part of a configuration id, e.g. `air-fp8`."""
        return f"{self.family}-{self.variant}-{self.precision}" if self.variant else f"{self.family}-{self.precision}"


_AIR = dict(
    family="air",
    total_params_b=106,
    active_params_b=12,
    layers=46,
    hidden_size=4096,
    moe_intermediate_size=1408,
    routed_experts=128,
    active_experts=8,
    shared_experts=1,
    qk_norm=False,
    intermediate_size=10944,
    first_dense_layers=1,
)
_FULL = dict(
    family="glm45",
    total_params_b=355,
    active_params_b=32,
    layers=92,
    hidden_size=5120,
    moe_intermediate_size=1536,
    routed_experts=160,
    active_experts=8,
    shared_experts=1,
    qk_norm=True,
    intermediate_size=12288,
    first_dense_layers=3,
)

#: GLM-4.6 and GLM-4.7: GLM-4.5's architecture (355B / 32B, 92 layers + MTP) with a 202,752-token context.
_GLM46 = dict(_FULL, family="glm46", generation="4.6", max_position_embeddings=202752)
_GLM47 = dict(_FULL, family="glm47", generation="4.7", max_position_embeddings=202752)

CATALOG: dict[str, ModelInfo] = {
    "tiny": ModelInfo(alias="tiny", checkpoint="(built by the kit)", family="tiny", precision="bf16"),
    "tiny-pp": ModelInfo(alias="tiny-pp", checkpoint="(built by the kit)", family="tiny", precision="bf16", variant="pp"),
    "tiny-4.7": ModelInfo(alias="tiny-4.7", checkpoint="(built by the kit)", family="tiny", precision="bf16", variant="4.7",
                          generation="4.7"),
    "air-fp8": ModelInfo(alias="air-fp8", checkpoint="zai-org/GLM-4.5-Air-FP8", precision="fp8", **_AIR),  # type: ignore[arg-type]
    "air-bf16": ModelInfo(alias="air-bf16", checkpoint="zai-org/GLM-4.5-Air", precision="bf16", **_AIR),  # type: ignore[arg-type]
    "fp8": ModelInfo(alias="fp8", checkpoint="zai-org/GLM-4.5-FP8", precision="fp8", **_FULL),  # type: ignore[arg-type]
    "bf16": ModelInfo(alias="bf16", checkpoint="zai-org/GLM-4.5", precision="bf16", **_FULL),  # type: ignore[arg-type]
    "glm-4.6": ModelInfo(alias="glm-4.6", checkpoint="zai-org/GLM-4.6", precision="bf16", **_GLM46),  # type: ignore[arg-type]
    "glm-4.6-fp8": ModelInfo(alias="glm-4.6-fp8", checkpoint="zai-org/GLM-4.6-FP8", precision="fp8", **_GLM46),  # type: ignore[arg-type]
    "glm-4.7": ModelInfo(alias="glm-4.7", checkpoint="zai-org/GLM-4.7", precision="bf16", **_GLM47),  # type: ignore[arg-type]
    "glm-4.7-fp8": ModelInfo(alias="glm-4.7-fp8", checkpoint="zai-org/GLM-4.7-FP8", precision="fp8", **_GLM47),  # type: ignore[arg-type]
    # The tiny model with one MTP layer (num_nextn_predict_layers 1; its other weights are tiny's): speculative decoding
    # with GLM-4.5's own method, --glm45-parallel tp1-mtp1 (docs/decode-modes.md).
    "tiny-mtp": ModelInfo(alias="tiny-mtp", checkpoint="(built by the kit)", family="tiny", precision="bf16", variant="mtp"),
    # The tiny model's weights served in float32 (--dtype float32): against tiny (bf16), a "precision differs" parity pair.
    "tiny-fp32": ModelInfo(alias="tiny-fp32", checkpoint="(built by the kit)", family="tiny", precision="fp32"),
    # A test fixture, not a model to accept: the tiny model with one expert and one norm perturbed, which
    # the logprob parity gate must fail (pytest_glm45.measure.parity; README, "Parity").
    "tiny-perturbed": ModelInfo(alias="tiny-perturbed", checkpoint="(built by the kit)", family="tiny", precision="bf16",
                                variant="perturbed"),
}
ALIASES = tuple(CATALOG)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class UnknownModel(ValueError):
    """A model name that is neither an alias, a hub id nor an existing path."""


def resolve_model(name: str, path_exists: bool = False) -> ModelInfo:
    """Turn what the user typed into a ModelInfo.

    Accepts a catalog alias, a hub id (`owner/name`), a local path (`path_exists` says
    whether `name` is an existing directory) or `alias=PATH_OR_HUB_ID`. A checkpoint that matches a
    catalog entry by its hub id, by its directory's config.json (pytest_glm45.engine.checkpoint) or by the alias
    it is named with gets that entry's architecture figures and configuration ids.
    """
    from pytest_glm45.engine.checkpoint import CheckpointError, catalog_entry, named_checkpoint

    name = name.strip()
    if name in CATALOG:
        return CATALOG[name]
    named = named_checkpoint(name)
    if named is not None:
        return named
    if path_exists:
        from pathlib import Path

        try:
            found = catalog_entry(Path(name).expanduser())
        except CheckpointError as exc:
            raise UnknownModel(str(exc)) from None
        if found is not None:
            return found
    for info in CATALOG.values():
        if info.checkpoint.lower() == name.lower():
            return info
    if path_exists or _HUB_ID.match(name):
        base = name.rstrip("/").split("/")[-1]
        precision = "fp8" if "fp8" in base.lower() else "bf16"
        family = re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "custom"
        family = family.replace("_fp8", "").replace("_bf16", "") or "custom"
        return ModelInfo(alias=name, checkpoint=name, family=family, precision=precision)
    raise UnknownModel(name)

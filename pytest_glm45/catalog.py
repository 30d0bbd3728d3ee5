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
    max_position_embeddings: int = MAX_POSITION_EMBEDDINGS
    #: A tiny model's variant (`pp`: 3 layers, so pipeline parallel 2 gives each stage an MoE layer); "" otherwise.
    variant: str = ""

    @property
    def is_tiny(self) -> bool:
        """Whether this is the kit's tiny model (the embedded default)."""
        return self.family == "tiny"

    @property
    def bytes_per_param(self) -> float:
        """Bytes per weight: 1 for FP8, 2 for BF16."""
        return 1.0 if self.precision == "fp8" else 2.0

    @property
    def weight_bytes(self) -> float | None:
        """Bytes of all weights in this precision (embeddings and MTP included in the totals)."""
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
)

CATALOG: dict[str, ModelInfo] = {
    "tiny": ModelInfo(alias="tiny", checkpoint="(built by the kit)", family="tiny", precision="bf16"),
    "tiny-pp": ModelInfo(alias="tiny-pp", checkpoint="(built by the kit)", family="tiny", precision="bf16", variant="pp"),
    "air-fp8": ModelInfo(alias="air-fp8", checkpoint="zai-org/GLM-4.5-Air-FP8", precision="fp8", **_AIR),  # type: ignore[arg-type]
    "air-bf16": ModelInfo(alias="air-bf16", checkpoint="zai-org/GLM-4.5-Air", precision="bf16", **_AIR),  # type: ignore[arg-type]
    "fp8": ModelInfo(alias="fp8", checkpoint="zai-org/GLM-4.5-FP8", precision="fp8", **_FULL),  # type: ignore[arg-type]
    "bf16": ModelInfo(alias="bf16", checkpoint="zai-org/GLM-4.5", precision="bf16", **_FULL),  # type: ignore[arg-type]
}
ALIASES = tuple(CATALOG)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class UnknownModel(ValueError):
    """A model name that is neither an alias, a hub id nor an existing path."""


def resolve_model(name: str, path_exists: bool = False) -> ModelInfo:
    """Turn what the user typed into a ModelInfo.

    Accepts a catalog alias, a hub id (`owner/name`) or a local path (`path_exists` says
    whether `name` is an existing directory). A checkpoint that matches a catalog entry by
    its hub id gets that entry's architecture figures.
    """
    name = name.strip()
    if name in CATALOG:
        return CATALOG[name]
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

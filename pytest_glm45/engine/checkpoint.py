"""A local checkpoint directory recognised as a catalog model from its config.json.

`--glm45-model /models/GLM-4.5-Air-FP8` (and `pytest-glm45 preflight --model` with a path) get the catalog
entry the directory holds, so preflight judges its weights and KV cache and its configurations are named as
the alias's are (`air-fp8-tp4`: a reference report from another box compares configuration by configuration):
the architecture `Glm4MoeForCausalLM`, the layer count and hidden size tell GLM-4.5 from GLM-4.5-Air, a
`quantization_config` with 8-bit floats tells FP8 from BF16, the context length GLM-4.5 from GLM-4.6/4.7.
GLM-4.6 and GLM-4.7 share everything config.json says and differ in their parsers, so a path of either must be
named with its alias: `glm-4.7=/models/GLM-4.7` (the `alias=PATH` form works for any catalog model, a
fine-tune say, and for a hub id).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_glm45.engine.catalog import CATALOG, ModelInfo

ARCHITECTURE = "Glm4MoeForCausalLM"
#: (layers, hidden size, max_position_embeddings) -> the alias stem; "" marks a shape two models share.
SHAPES = {(46, 4096, 131072): "air-", (92, 5120, 131072): "", (92, 5120, 202752): "glm-4.6-or-4.7"}


class CheckpointError(ValueError):
    """A checkpoint directory whose config.json names a GLM-4.x model the kit cannot tell apart by itself."""


def is_fp8(config: dict[str, Any]) -> bool:
    """Whether config.json's quantization_config stores 8-bit floats (FP8 or compressed-tensors float-quantized)."""
    quant = config.get("quantization_config")
    if not isinstance(quant, dict):
        return False
    text = json.dumps(quant).lower()
    return "fp8" in text or "float-quantized" in text or ('"type": "float"' in text and '"num_bits": 8' in text)


def catalog_entry(path: Path) -> ModelInfo | None:
    """The catalog model a checkpoint directory holds, served from that directory; None when its config.json is
    missing or names another architecture (the kit then knows only its GPU count). CheckpointError when it is
    GLM-4.6 or GLM-4.7, which config.json does not tell apart."""
    try:
        config = json.loads((path / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or ARCHITECTURE not in (config.get("architectures") or []):
        return None
    shape = (config.get("num_hidden_layers"), config.get("hidden_size"), config.get("max_position_embeddings"))
    stem = SHAPES.get(shape)  # type: ignore[arg-type]
    precision = "fp8" if is_fp8(config) else "bf16"
    if stem is None:
        return None
    if stem == "glm-4.6-or-4.7":
        raise CheckpointError(f"{path}: config.json describes GLM-4.6 or GLM-4.7 ({ARCHITECTURE}, 92 layers, 202752 tokens), "
                              "which use different tool-call parsers; accepted: name it, e.g. glm-4.7=" + str(path)
                              + " or glm-4.6-fp8=" + str(path))  # fmt: skip
    alias = f"{stem}{precision}"
    return replace(CATALOG[alias], checkpoint=str(path))


def named_checkpoint(text: str) -> ModelInfo | None:
    """`alias=PATH_OR_HUB_ID`: the catalog model `alias` served from that checkpoint; None when `text` is not of that
    form (or names the kit's tiny model, which the kit builds itself)."""
    alias, sep, where = text.partition("=")
    info = CATALOG.get(alias.strip())
    if not sep or info is None or info.is_tiny or not where.strip():
        return None
    return replace(info, checkpoint=where.strip())

"""Preflight: can this host run a configuration, before minutes are spent booting it?

From the model's published architecture (the catalog) and the GPU inventory: enough GPUs for
tp x dp; FP8 kernels for the compute capability (else which fallback, and whether its
divisibility holds); the MoE intermediate shard against the kernel's block; weights plus the
KV cache of the planned context at the planned concurrency against the usable memory. Every
verdict carries its numbers. Also the roofline: the memory-bandwidth floor of TPOT.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pytest_glm45.catalog import HEAD_DIM, KV_HEADS, ModelInfo
from pytest_glm45.inventory import Gpu, Inventory
from pytest_glm45.matrix import Configuration, Plan

GIB = 2**30
#: Memory per GPU that vLLM needs besides weights and KV cache (activations, CUDA graphs, NCCL buffers).
RUNTIME_OVERHEAD_BYTES = 4 * GIB
#: Share of the weights in routed experts (GLM-4.5 and Air: about 95%); expert parallel splits only these.
EXPERT_SHARE = 0.95
#: FP8 Marlin (the fallback below compute capability 8.9) tiles the MoE intermediate dimension by 64.
MARLIN_BLOCK = 64
#: A configuration with less free memory than this share of usable memory is "tight".
TIGHT_SHARE = 0.10

#: Peak memory bandwidth, bytes/s, by GPU model name fragment (first match wins; most specific first).
BANDWIDTH = (
    ("H200", 4.8e12),
    ("H100 PCIe", 2.0e12),
    ("H100 NVL", 3.9e12),
    ("H100", 3.35e12),
    ("GH200", 4.0e12),
    ("B200", 8.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
    ("L40S", 0.864e12),
    ("L4", 0.3e12),
)


def bandwidth(gpu_name: str) -> float | None:
    """Peak memory bandwidth of a GPU model in bytes/s, or None when unknown."""
    for fragment, bw in BANDWIDTH:
        if fragment.lower() in gpu_name.lower():
            return bw
    return None


@dataclass
class Verdict:
    """Whether a configuration can run here, and why not or how tightly."""

    runnable: bool
    tight: bool = False
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    numbers: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """The verdict in one line: why not, or how it fits."""
        if not self.runnable:
            return "; ".join(self.reasons)
        return ("tight: " if self.tight else "fits: ") + "; ".join(self.notes)


def kv_bytes_per_token_per_gpu(model: ModelInfo, plan: Plan, kv_bytes: float = 2.0) -> float:
    """K and V for every layer; KV heads split over tensor parallel (replicated past 8)."""
    layers = model.layers or 0
    heads_per_gpu = max(1.0, KV_HEADS / plan.tp)
    return layers * 2 * heads_per_gpu * HEAD_DIM * kv_bytes


def weight_bytes_per_gpu(model: ModelInfo, plan: Plan) -> float:
    """Weights each GPU holds: split over tp, experts also over the expert-parallel group."""
    total = model.weight_bytes or 0.0
    if plan.ep:
        return total * (1 - EXPERT_SHARE) / plan.tp + total * EXPERT_SHARE / plan.gpus
    return total / plan.tp


def check(
    model: ModelInfo,
    plan: Plan,
    inventory: Inventory,
    max_model_len: int,
    concurrency: int = 1,
    gpu_memory_utilization: float = 0.95,
    kv_cache_dtype_bytes: float = 2.0,
) -> Verdict:
    """The verdict for serving `model` at `plan` on this inventory."""
    v = Verdict(runnable=True)
    if model.weight_bytes is None or model.layers is None:
        v.notes.append(f"{model.alias}: architecture not in the catalog; only the GPU count is checked")
    if plan.gpus > inventory.count:
        v.runnable = False
        v.reasons.append(f"{plan.id} needs {plan.gpus} GPUs; this host has {inventory.count}")
        return v
    gpus = inventory.gpus[: plan.gpus]
    gpu: Gpu = min(gpus, key=lambda g: g.memory_bytes)
    cc = gpu.compute_capability or (0, 0)
    v.numbers["compute_capability"] = cc[0] + cc[1] / 10

    if model.moe_intermediate_size:
        shard = model.moe_intermediate_size if plan.ep else model.moe_intermediate_size / plan.tp
        v.numbers["moe_intermediate_shard"] = shard
        if shard != int(shard):
            v.runnable = False
            v.reasons.append(f"the MoE intermediate size {model.moe_intermediate_size} does not split over tp{plan.tp}")
    if model.precision == "fp8":
        if cc >= (8, 9):
            v.notes.append(f"FP8 native kernels (compute capability {cc[0]}.{cc[1]})")
        elif cc >= (8, 0):
            shard = v.numbers.get("moe_intermediate_shard", 0)
            if shard % MARLIN_BLOCK:
                v.runnable = False
                v.reasons.append(
                    f"FP8 on compute capability {cc[0]}.{cc[1]} falls back to Marlin, which needs the per-GPU MoE "
                    f"intermediate shard divisible by {MARLIN_BLOCK}: {model.moe_intermediate_size}/{plan.tp} = {shard:g} is not "
                    f"(use a smaller tp, expert parallel, or the BF16 checkpoint)"
                )
            else:
                v.notes.append(f"FP8 via the Marlin fallback (compute capability {cc[0]}.{cc[1]} < 8.9; shard {shard:g} divides by {MARLIN_BLOCK})")
        else:
            v.runnable = False
            v.reasons.append(f"FP8 needs compute capability 8.0 or more (Marlin) and 8.9 for native kernels; {gpu.name} has {cc[0]}.{cc[1]}")

    if model.weight_bytes is not None and model.layers is not None:
        usable = gpu.memory_bytes * gpu_memory_utilization - RUNTIME_OVERHEAD_BYTES
        weights = weight_bytes_per_gpu(model, plan)
        kv = kv_bytes_per_token_per_gpu(model, plan, kv_cache_dtype_bytes) * max_model_len * concurrency
        free = usable - weights - kv
        v.numbers.update(
            usable_gib=usable / GIB, weights_gib=weights / GIB, kv_cache_gib=kv / GIB, free_gib=free / GIB,
            max_model_len=max_model_len, concurrency=concurrency,
        )  # fmt: skip
        figures = (
            f"per GPU: {weights / GIB:.1f} GiB weights + {kv / GIB:.1f} GiB KV cache ({max_model_len} tokens x {concurrency}) "
            f"of {usable / GIB:.1f} GiB usable ({gpu.memory_gib:.0f} GiB x {gpu_memory_utilization} - {RUNTIME_OVERHEAD_BYTES / GIB:.0f} GiB runtime)"
        )
        if weights > usable:
            v.runnable = False
            v.reasons.append(f"the {model.precision.upper()} weights do not fit: {figures}")
            total_needed = (model.weight_bytes or 0) / (gpu.memory_bytes * gpu_memory_utilization - RUNTIME_OVERHEAD_BYTES)
            if total_needed > 8:
                v.reasons.append(
                    f"{model.alias} needs about {total_needed:.0f} GPUs of this kind: more than one 8-GPU host. Serve it "
                    "across nodes with vLLM's Ray backend (--distributed-executor-backend ray, tp x pp over the nodes) "
                    "and test it with --glm45-base-url"
                )
        elif free < 0:
            v.runnable = False
            v.reasons.append(f"the KV cache for the planned context does not fit: {figures}; lower --glm45-max-model-len or add GPUs")
        else:
            v.notes.append(figures)
            v.tight = free < usable * TIGHT_SHARE
            if v.tight:
                v.notes.append(f"only {free / GIB:.1f} GiB left for more KV cache: tight")
    return v


def tpot_floor_seconds(model: ModelInfo, plan: Plan, gpu_name: str) -> float | None:
    """The memory-bandwidth floor of TPOT: active parameter bytes per GPU over the GPU's bandwidth."""
    bw = bandwidth(gpu_name)
    if bw is None or model.active_weight_bytes is None:
        return None
    return model.active_weight_bytes / plan.tp / bw


def apply(matrix: tuple[Configuration, ...], inventory: Inventory, concurrency: int = 1) -> tuple[Configuration, ...]:
    """The matrix with each GPU configuration's preflight verdict as its skip reason where it cannot run."""
    out = []
    for config in matrix:
        if config.engine == "gpu" and config.skip_reason is None:
            v = check(config.model, config.plan, inventory, config.max_model_len, concurrency)
            if not v.runnable:
                config = replace(config, skip_reason=f"preflight: {v.summary()}")
        out.append(config)
    return tuple(out)


def table(models: list[ModelInfo], inventory: Inventory, max_model_len: int, concurrency: int = 1) -> list[tuple[str, str]]:
    """(configuration id, verdict) for every model at every plan this host's GPU count allows."""
    from pytest_glm45.matrix import VALID_TP

    plans = []
    for tp in VALID_TP:
        for dp in (1, 2, 4, 8):
            if tp * dp <= max(inventory.count, 1):
                plans.append(Plan(tp=tp, dp=dp))
                if tp * dp > 1:
                    plans.append(Plan(tp=tp, dp=dp, ep=True))
    rows = []
    for model in models:
        for plan in plans:
            v = check(model, plan, inventory, max_model_len, concurrency)
            rows.append((f"{model.label}-{plan.id}", ("RUNS  " if v.runnable else "SKIP  ") + v.summary()))
    return rows

"""Preflight: can this host run a configuration, before minutes are spent booting it?

From the model's published architecture (the catalog) and the GPU inventory: enough GPUs for
tp x dp; FP8 kernels for the compute capability (else which fallback, and whether its
divisibility holds); the MoE intermediate shard against the kernel's block; weights plus the
KV cache of the planned context at the planned concurrency against the usable memory. Every
verdict carries its numbers. Also the roofline: the memory-bandwidth floor of TPOT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pytest_glm45.engine.catalog import ATTENTION_HEADS, HEAD_DIM, KV_HEADS, VOCAB_SIZE, ModelInfo
from pytest_glm45.engine.cluster import Cluster, start_commands
from pytest_glm45.engine.inventory import Gpu, Inventory
from pytest_glm45.engine.matrix import VALID_TP, Configuration, Plan, stage_layers

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


def mtp_draft_bytes(model: ModelInfo, plan: Plan, max_model_len: int, concurrency: int = 1,
                    kv_cache_dtype_bytes: float = 2.0) -> tuple[float, float] | None:  # fmt: skip
    """(weights, KV cache) per GPU of the MTP draft layers that `plan`'s speculative decoding loads (`-mtpK`), else
    None: each an MoE decoder layer (attention, router, shared and routed experts) with its two norms and the 2h x h
    projection of the embedding and the hidden state (vLLM's Glm4MoeMultiTokenPredictorLayer; it shares the target's
    embeddings), split as the other layers are; its KV cache is one more layer's for the planned context. The
    published parameter totals (355B, 106B) are the model without it: vLLM loads it only for speculative decoding."""
    h, moe_inter, layers = model.hidden_size, model.moe_intermediate_size, model.mtp_layers
    if plan.decode.speculative != "mtp" or not h or not moe_inter or not layers:
        return None
    routed, shared = model.routed_experts or 0, model.shared_experts or 0
    attention = 2 * h * ATTENTION_HEADS * HEAD_DIM + 2 * h * KV_HEADS * HEAD_DIM
    other = shared * 3 * h * moe_inter + h * routed + 2 * h * h + 3 * h
    experts = routed * 3 * h * moe_inter
    expert_gpus = plan.tp * plan.dp if plan.ep else plan.tp
    weights = layers * ((attention + other) * model.bytes_per_param / plan.tp + experts * model.bytes_per_param / expert_gpus)
    kv = layers * 2 * max(1.0, KV_HEADS / plan.tp) * HEAD_DIM * kv_cache_dtype_bytes * max_model_len * concurrency
    return weights, kv


@dataclass(frozen=True)
class Stage:
    """One pipeline stage's share of the model and what each of its GPUs holds."""

    index: int
    layers: range
    dense: int
    moe: int
    #: the MTP layer (loaded with speculative decoding), on the last stage as vLLM places it
    mtp: int
    embeddings: bool
    lm_head: bool
    weight_bytes: float  # per GPU
    kv_bytes: float  # per GPU, for the planned context and concurrency

    def describe(self, usable: float) -> str:
        """`stage 1: layers 46-91 (46 MoE) + MTP + lm_head: 44.1 GiB weights + 1.4 GiB KV cache of 71.6 GiB usable`."""
        kinds = ", ".join(f"{n} {what}" for n, what in ((self.dense, "dense"), (self.moe, "MoE")) if n)
        extras = "".join(f" + {what}" for ok, what in ((self.embeddings, "embeddings"), (self.mtp, "MTP"), (self.lm_head, "lm_head")) if ok)
        return (f"stage {self.index}: layers {self.layers.start}-{self.layers.stop - 1} ({kinds}){extras}: "
                f"{self.weight_bytes / GIB:.1f} GiB weights + {self.kv_bytes / GIB:.1f} GiB KV cache of {usable / GIB:.1f} GiB usable")  # fmt: skip


def stages(
    model: ModelInfo, plan: Plan, max_model_len: int, concurrency: int = 1, kv_cache_dtype_bytes: float = 2.0
) -> list[Stage] | None:
    """Each pipeline stage's weights and KV cache per GPU, from the architecture: vLLM's layer split
    (`matrix.stage_layers`), the first layers dense, embeddings on the first stage, the final norm, lm_head
    and the MTP layer on the last; attention and dense weights split over tp, routed experts over tp (or,
    with expert parallel, over the stage's tp x dp GPUs); embeddings and lm_head stay BF16 in the FP8
    checkpoints. None when the catalog lacks the architecture."""
    h, inter, moe_inter = model.hidden_size, model.intermediate_size, model.moe_intermediate_size
    if model.layers is None or model.first_dense_layers is None or not h or not inter or not moe_inter:
        return None
    routed, shared = model.routed_experts or 0, model.shared_experts or 0
    attention = 2 * h * ATTENTION_HEADS * HEAD_DIM + 2 * h * KV_HEADS * HEAD_DIM
    dense_ffn = 3 * h * inter
    experts = routed * 3 * h * moe_inter
    moe_other = shared * 3 * h * moe_inter + h * routed
    embedding = VOCAB_SIZE * h
    bpp = model.bytes_per_param
    expert_gpus = plan.tp * plan.dp if plan.ep else plan.tp
    kv_heads = max(1.0, KV_HEADS / plan.tp)
    out = []
    split = stage_layers(model.layers, plan.pp)
    for n, layers in enumerate(split):
        dense = sum(1 for i in layers if i < model.first_dense_layers)
        moe = len(layers) - dense
        last = n == len(split) - 1
        mtp = model.mtp_layers if last else 0
        shared_bytes = ((dense + moe + mtp) * attention + dense * dense_ffn + (moe + mtp) * moe_other) * bpp
        expert_bytes = (moe + mtp) * experts * bpp
        table_bytes = ((n == 0) + last) * embedding * 2.0
        weights = (shared_bytes + table_bytes) / plan.tp + expert_bytes / expert_gpus
        # The MTP layer's weights are counted on the last stage; its KV cache only where speculative decoding loads it.
        kv_layers = len(layers) + (mtp if plan.decode.speculative == "mtp" else 0)
        kv = kv_layers * 2 * kv_heads * HEAD_DIM * kv_cache_dtype_bytes * max_model_len * concurrency
        out.append(Stage(n, layers, dense, moe, mtp, n == 0, last, weights, kv))
    return out


#: What the kit passes to every GPU server (recipe.vllm_args); a --glm45-server-arg given after it wins in vLLM.
GPU_MEMORY_UTILIZATION = 0.95
#: Bytes per KV cache element by `--kv-cache-dtype` (vLLM's default, auto, keeps the model's BF16).
KV_CACHE_DTYPE_BYTES = {"auto": 2.0, "bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0}


@dataclass(frozen=True)
class MemorySettings:
    """The two server flags preflight's memory figures depend on, as the server will run them."""

    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION
    kv_cache_dtype_bytes: float = 2.0


def memory_settings(server_args: Sequence[str]) -> MemorySettings:
    """`--gpu-memory-utilization` and `--kv-cache-dtype` as the extra server arguments set them (the last one wins, as in
    vLLM's parser; `--flag=value` and `--flag value` alike); the kit's 0.95 and BF16 otherwise."""
    values: dict[str, str] = {}
    args = list(server_args)
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in ("--gpu-memory-utilization", "--kv-cache-dtype"):
            given = value if eq else (args[i + 1] if i + 1 < len(args) else "")
            values[name] = given
    utilization = GPU_MEMORY_UTILIZATION
    if "--gpu-memory-utilization" in values:
        try:
            utilization = float(values["--gpu-memory-utilization"])
        except ValueError:
            raise ValueError(f"--gpu-memory-utilization {values['--gpu-memory-utilization']!r} is not a number") from None
    kv = KV_CACHE_DTYPE_BYTES.get(values.get("--kv-cache-dtype", "auto"), 2.0)
    return MemorySettings(utilization, kv)


def usable_bytes(gpu: Gpu, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> float:
    """What vLLM may fill on `gpu`: its memory x the utilization, less the runtime's overhead."""
    return gpu.memory_bytes * gpu_memory_utilization - RUNTIME_OVERHEAD_BYTES


def fitting_host_plan(model: ModelInfo, gpu: Gpu, gpus_per_host: int, max_model_len: int, concurrency: int = 1,
                      utilization: float = GPU_MEMORY_UTILIZATION, kv_bytes: float = 2.0) -> Plan | None:  # fmt: skip
    """The smallest tensor-parallel plan (`tpN`, else `tpN-ep`) on one host like this one whose weights and KV cache fit."""
    usable = usable_bytes(gpu, utilization)
    for tp in (t for t in VALID_TP if t <= gpus_per_host):
        for plan in (Plan(tp=tp), Plan(tp=tp, ep=True)) if tp > 1 else (Plan(tp=tp),):
            kv = kv_bytes_per_token_per_gpu(model, plan, kv_bytes) * max_model_len * concurrency
            if weight_bytes_per_gpu(model, plan) + kv <= usable:
                return plan
    return None


def fitting_plan(
    model: ModelInfo, gpu: Gpu, gpus_per_host: int, max_model_len: int, concurrency: int = 1, max_hosts: int = 8
) -> tuple[Plan, list[Stage]] | None:
    """The smallest pipeline over hosts like this one (`ppK-tpN`, N = the host's GPUs) whose every stage fits."""
    tps = [t for t in VALID_TP if t <= gpus_per_host]
    if not tps:
        return None
    usable = usable_bytes(gpu)
    for pp in range(2, max_hosts + 1):
        plan = Plan(tp=tps[-1], pp=pp)
        split = stages(model, plan, max_model_len, concurrency)
        if split is None:
            return None
        if all(s.weight_bytes + s.kv_bytes <= usable for s in split):
            return plan, split
    return None


def _check_stages(v: Verdict, model: ModelInfo, plan: Plan, inventory: Inventory | Cluster, gpu: Gpu,
                  max_model_len: int, concurrency: int, utilization: float, kv_bytes: float) -> None:  # fmt: skip
    """Pipeline plans: where the stages' tensor-parallel groups go, and each stage's memory."""
    if isinstance(inventory, Cluster):
        largest = max(len(node.gpus) for node in inventory.nodes)
        groups = inventory.groups_of(plan.tp)
        if plan.tp > largest:
            v.runnable = False
            v.reasons.append(f"a tensor-parallel group of {plan.tp} GPUs must sit on one host; the largest node of the cluster has {largest}")
        elif groups < plan.pp * plan.dp:
            v.runnable = False
            v.reasons.append(f"{plan.id} needs {plan.pp * plan.dp} groups of {plan.tp} GPUs on one node each; "
                             f"{inventory.summary()} holds {groups}")  # fmt: skip
    split = stages(model, plan, max_model_len, concurrency, kv_bytes)
    if split is None:
        return
    usable = usable_bytes(gpu, utilization)
    worst = max(split, key=lambda s: s.weight_bytes + s.kv_bytes)
    v.numbers.update(usable_gib=usable / GIB, weights_gib=worst.weight_bytes / GIB, kv_cache_gib=worst.kv_bytes / GIB,
                     free_gib=(usable - worst.weight_bytes - worst.kv_bytes) / GIB, max_model_len=max_model_len,
                     concurrency=concurrency, stages=len(split))  # fmt: skip
    for s in split:
        v.numbers[f"stage{s.index}_weights_gib"] = s.weight_bytes / GIB
        v.numbers[f"stage{s.index}_kv_cache_gib"] = s.kv_bytes / GIB
    figures = "; ".join(s.describe(usable) for s in split) + f" (per GPU; {max_model_len} tokens x {concurrency})"
    if any(s.weight_bytes > usable for s in split):
        v.runnable = False
        v.reasons.append(f"the {model.precision.upper()} weights of a stage do not fit: {figures}")
    elif any(s.weight_bytes + s.kv_bytes > usable for s in split):
        v.runnable = False
        v.reasons.append(f"a stage's KV cache for the planned context does not fit: {figures}; lower --glm45-max-model-len or add stages")
    else:
        v.notes.append(figures)
        v.tight = usable - worst.weight_bytes - worst.kv_bytes < usable * TIGHT_SHARE


def check(
    model: ModelInfo,
    plan: Plan,
    inventory: Inventory | Cluster,
    max_model_len: int,
    concurrency: int = 1,
    gpu_memory_utilization: float = 0.95,
    kv_cache_dtype_bytes: float = 2.0,
) -> Verdict:
    """The verdict for serving `model` at `plan` on this inventory."""
    v = Verdict(runnable=True)
    if model.weight_bytes is None or model.layers is None:
        v.notes.append(f"{model.alias}: architecture not in the catalog; only the GPU count is checked")
    where = "the cluster has" if isinstance(inventory, Cluster) else "this host has"
    if plan.gpus > inventory.count:
        v.runnable = False
        v.reasons.append(f"{plan.id} needs {plan.gpus} GPUs; {where} {inventory.count}")
        if plan.pp > 1 and not isinstance(inventory, Cluster):
            v.reasons.append(f"a pipeline over hosts runs on a Ray cluster: {start_commands()}")
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

    if plan.pp > 1:
        _check_stages(v, model, plan, inventory, gpu, max_model_len, concurrency, gpu_memory_utilization, kv_cache_dtype_bytes)
    elif model.weight_bytes is not None and model.layers is not None:
        usable = gpu.memory_bytes * gpu_memory_utilization - RUNTIME_OVERHEAD_BYTES
        weights = weight_bytes_per_gpu(model, plan)
        kv = kv_bytes_per_token_per_gpu(model, plan, kv_cache_dtype_bytes) * max_model_len * concurrency
        draft = mtp_draft_bytes(model, plan, max_model_len, concurrency, kv_cache_dtype_bytes)
        if draft is not None:
            weights, kv = weights + draft[0], kv + draft[1]
            v.numbers.update(mtp_weights_gib=draft[0] / GIB, mtp_kv_cache_gib=draft[1] / GIB)
            v.notes.append(f"the MTP draft layer ({plan.decode.id}): {draft[0] / GIB:.1f} GiB weights + {draft[1] / GIB:.2f} GiB "
                           "KV cache per GPU, counted in the figures")  # fmt: skip
        free = usable - weights - kv
        v.numbers.update(
            usable_gib=usable / GIB, weights_gib=weights / GIB, kv_cache_gib=kv / GIB, free_gib=free / GIB,
            max_model_len=max_model_len, concurrency=concurrency,
        )  # fmt: skip
        figures = (
            f"per GPU: {weights / GIB:.1f} GiB weights + {kv / GIB:.1f} GiB {'FP8 ' if kv_cache_dtype_bytes < 2 else ''}KV cache "
            f"({max_model_len} tokens x {concurrency}) "
            f"of {usable / GIB:.1f} GiB usable ({gpu.memory_gib:.0f} GiB x {gpu_memory_utilization} - {RUNTIME_OVERHEAD_BYTES / GIB:.0f} GiB runtime)"
        )
        if weights > usable:
            v.runnable = False
            v.reasons.append(f"the {model.precision.upper()} weights do not fit: {figures}")
            per_host = len(_host_gpus(inventory))
            on_host = fitting_host_plan(model, gpu, per_host, max_model_len, concurrency, gpu_memory_utilization, kv_cache_dtype_bytes)
            if on_host is not None and plan.dp > 1:
                # Data parallel replicates the weights: fewer replicas of a wider tensor-parallel group fit.
                v.reasons.append(f"{on_host.id} fits on this host ({on_host.gpus} GPUs: the weights split {on_host.tp} ways)")
            elif plan.gpus >= per_host:  # no smaller-than-the-host plan would help: name the one over hosts
                fit = fitting_plan(model, gpu, per_host, max_model_len, concurrency)
                if fit is not None:
                    better, split = fit
                    worst = max(split, key=lambda s: s.weight_bytes + s.kv_bytes)
                    v.reasons.append(
                        f"{better.id} would fit, over {better.pp} hosts like this one ({better.gpus} GPUs): up to "
                        f"{worst.weight_bytes / GIB:.1f} GiB weights + {worst.kv_bytes / GIB:.1f} GiB KV cache per GPU "
                        f"in a stage; run --glm45-parallel {better.id} on a Ray cluster: {start_commands()}"
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


def _host_gpus(inventory: Inventory | Cluster) -> Sequence[Gpu]:
    """The GPUs of one host: the inventory's, or the cluster's largest node's."""
    if isinstance(inventory, Cluster):
        return max((node.gpus for node in inventory.nodes), key=len)
    return inventory.gpus


def tpot_floor_seconds(model: ModelInfo, plan: Plan, gpu_name: str) -> float | None:
    """The memory-bandwidth floor of TPOT: active parameter bytes per GPU over the GPU's bandwidth."""
    bw = bandwidth(gpu_name)
    if bw is None or model.active_weight_bytes is None:
        return None
    return model.active_weight_bytes / plan.tp / bw


def apply(matrix: tuple[Configuration, ...], inventory: Inventory | Cluster, concurrency: int = 1,
          engine: str = "gpu", server_args: Sequence[str] = ()) -> tuple[Configuration, ...]:  # fmt: skip
    """The matrix with each `engine` configuration's preflight verdict as its skip reason where it cannot run
    (`gpu` on this host's inventory, `ray` on the cluster's), judged with the memory flags of `server_args`."""
    memory = memory_settings(server_args)
    out = []
    for config in matrix:
        if config.engine == engine and config.skip_reason is None:
            v = check(config.model, config.plan, inventory, config.max_model_len, concurrency,
                      memory.gpu_memory_utilization, memory.kv_cache_dtype_bytes)  # fmt: skip
            if not v.runnable:
                config = replace(config, skip_reason=f"preflight: {v.summary()}")
        out.append(config)
    return tuple(out)


def table(models: list[ModelInfo], inventory: Inventory, max_model_len: int, concurrency: int = 1,
          memory: MemorySettings = MemorySettings()) -> list[tuple[str, str]]:  # fmt: skip
    """(configuration id, verdict) for every model at every plan this host's GPU count allows."""
    from pytest_glm45.engine.matrix import VALID_TP

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
            v = check(model, plan, inventory, max_model_len, concurrency, memory.gpu_memory_utilization, memory.kv_cache_dtype_bytes)
            rows.append((f"{model.label}-{plan.id}", ("RUNS  " if v.runnable else "SKIP  ") + v.summary()))
    return rows

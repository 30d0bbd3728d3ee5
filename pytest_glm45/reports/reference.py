"""What a report ran, read back from its configuration ids: the models, parallel plans and tool-calling modes.

A configuration id is `<model label>-<plan>[-nostrict]` (`air-fp8-tp4`, `glm45-fp8-dp2-tp4-nostrict`); the
catalog's labels name the models. Box acceptance uses this to run a reference report's own configurations on a
new box (so that the two reports compare configuration by configuration), and a re-judge to know each
configuration's model family (known-failure entries can be limited to one).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from pytest_glm45.engine.catalog import CATALOG
from pytest_glm45.engine.matrix import Plan, PlanError, parse_plan

#: The suffix of a configuration served with VLLM_ENFORCE_STRICT_TOOL_CALLING=0.
LAX_SUFFIX = "-nostrict"


@dataclass(frozen=True)
class RanConfiguration:
    """One configuration id, read back: the catalog alias of its model, its plan and its strictness."""

    config_id: str
    alias: str
    plan: Plan
    strict_tools: bool

    @property
    def model_family(self) -> str:
        """The model family known-failure entries name (`glm-4.5-air`, `glm-4.7`, ...)."""
        return CATALOG[self.alias].generation_name


def parse_config_id(config_id: str) -> RanConfiguration | None:
    """`air-fp8-dp2-tp4-nostrict` as (air-fp8, dp2-tp4, lax); None for an id whose model is not in the catalog
    (a hub id or a local path that matched no entry) or a server given by URL (`remote`)."""
    strict = not config_id.endswith(LAX_SUFFIX)
    base = config_id.removesuffix(LAX_SUFFIX)
    # The longest label first: `tiny-pp-bf16` before `tiny-...`.
    for alias, info in sorted(CATALOG.items(), key=lambda item: -len(item[1].label)):
        prefix = info.label + "-"
        if base.startswith(prefix):
            try:
                plan = parse_plan(base[len(prefix) :])
            except PlanError:
                continue
            if plan.id == base[len(prefix) :]:
                return RanConfiguration(config_id, alias, plan, strict)
    return None


def model_family(config_id: str) -> str | None:
    """The model family of a configuration id, or None when the id does not name a catalog model."""
    ran = parse_config_id(config_id)
    return ran.model_family if ran is not None else None


@dataclass(frozen=True)
class RunPlan:
    """The options that make the same configurations as a report: models, plans (the one with the lax twin
    first) and strictness (None: the default, strict everywhere and lax too on the first plan)."""

    models: tuple[str, ...]
    plans: tuple[str, ...]
    strict: str | None
    #: the configurations the report ran
    configs: frozenset[str]
    #: the configurations these options make that the report did not run (empty when they make exactly its own)
    extra: tuple[str, ...] = ()

    def pytest_args(self) -> list[str]:
        """`--glm45-model ... --glm45-parallel ...` (and `--glm45-strict-tools ...` when not the default)."""
        args = ["--glm45-model", ",".join(self.models), "--glm45-parallel", ",".join(self.plans)]
        return args + (["--glm45-strict-tools", self.strict] if self.strict else [])

    def with_checkpoints(self, checkpoints: Mapping[str, str]) -> RunPlan:
        """The same plan with each model named in `checkpoints` served from its checkpoint (`air-fp8=/models/...`)."""
        unknown = sorted(set(checkpoints) - set(self.models))
        if unknown:
            raise ReferenceError(f"--checkpoint names {', '.join(unknown)}, which the report did not run; "
                                 f"accepted: one of {', '.join(self.models)}")  # fmt: skip
        tiny = sorted(m for m in checkpoints if CATALOG[m].is_tiny)
        if tiny:
            raise ReferenceError(f"--checkpoint names {', '.join(tiny)}, which the kit builds itself; accepted: a real model")
        models = tuple(f"{m}={checkpoints[m]}" if m in checkpoints else m for m in self.models)
        return replace(self, models=models)

    def preflight_args(self) -> list[str]:
        """`--model ... --plan ...` for `pytest-glm45 preflight`."""
        return ["--model", ",".join(self.models), "--plan", ",".join(self.plans)]


class ReferenceError(ValueError):
    """A report whose configurations cannot be named again by options."""


def _expand(models: tuple[str, ...], plans: tuple[str, ...], strict: str | None) -> set[str]:
    """The configuration ids that these options make (as `matrix.build_matrix` orders and names them)."""
    modes = {"on": (True,), "off": (False,), "on,off": (True, False), None: (True, False)}[strict]
    out = set()
    for alias in models:
        for n, plan in enumerate(plans):
            for mode in modes:
                if strict is None and not mode and n > 0:
                    continue
                out.add(f"{CATALOG[alias].label}-{plan}" + ("" if mode else LAX_SUFFIX))
    return out


def run_plan(report: Mapping[str, Any]) -> RunPlan:
    """The options that run `report`'s configurations again; ReferenceError naming the ids that no option makes."""
    ids = list(report.get("configurations") or {})
    if not ids:
        raise ReferenceError("the report has no configuration")
    ran = [parse_config_id(i) for i in ids]
    unknown = [i for i, r in zip(ids, ran, strict=True) if r is None]
    if unknown:
        raise ReferenceError(f"configuration(s) {', '.join(unknown)} name no model of the catalog (a server given by URL, "
                             "a hub id or a path); accepted: a report of catalog models (air-fp8, fp8, ...), or name the "
                             "models and plans yourself")  # fmt: skip
    known = [r for r in ran if r is not None]
    models = tuple(dict.fromkeys(r.alias for r in known))
    plans = list(dict.fromkeys(r.plan.id for r in known))
    lax_plans = [p for p in plans if any(r.plan.id == p and not r.strict_tools for r in known)]
    configs = frozenset(ids)
    candidates: list[tuple[tuple[str, ...], str | None]] = []
    if len(lax_plans) == 1:  # the default: the plan with the lax twin goes first
        candidates.append(((lax_plans[0], *[p for p in plans if p != lax_plans[0]]), None))
    candidates += [(tuple(plans), "on"), (tuple(plans), "off"), (tuple(plans), "on,off")]
    for plan_order, strict in candidates:
        if _expand(models, plan_order, strict) == configs:
            return RunPlan(models, plan_order, strict, configs)
    # No option makes exactly these (a model on some plans only, say): the smallest superset, extras named.
    plan_order, strict = min(candidates, key=lambda c: len(_expand(models, c[0], c[1]) - configs) if _expand(models, c[0], c[1]) >= configs else 10**6)
    return RunPlan(models, plan_order, strict, configs, tuple(sorted(_expand(models, plan_order, strict) - configs)))


def describe(plan: RunPlan) -> str:
    """The options as one shell line, with the configurations they make beyond the report's named."""
    line = shlex.join(plan.pytest_args())
    return line + (f"  # also runs {', '.join(plan.extra)}, which the reference did not" if plan.extra else "")

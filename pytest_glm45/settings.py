"""The kit's settings: every option resolved once, validated, and frozen.

The plugin reads each option (command line first, then the ini key) into a plain mapping and
calls `resolve_settings`; a `SettingsError` names the option, the value given and what is
accepted, and the plugin turns it into a `pytest.UsageError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.catalog import ALIASES, ModelInfo, UnknownModel, resolve_model
from pytest_glm45.matrix import Configuration, Plan, PlanError, build_matrix, default_plans, parse_plan


class SettingsError(ValueError):
    """An option value the kit cannot accept."""

    def __init__(self, option: str, value: object, accepted: str) -> None:
        self.option, self.value, self.accepted = option, value, accepted
        super().__init__(f"{option}: {value!r} is not accepted; {accepted}")


@dataclass(frozen=True)
class Profile:
    """How big a run is: example counts and workload sizes scale with it."""

    name: str
    hypothesis_examples: int
    robustness_requests: int
    description: str
    #: The share of generated examples (property round trips, hostile requests) that a model's
    #: other parallel plans run; its first plan runs them all. What they exercise is the API
    #: server's parsing and validation, the same code on every plan; the other plans still run
    #: every check, with fewer random draws.
    other_plans_share: float = 1.0


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", 20, 100, "the least that still exercises every check; for a first look", 0.25),
    "standard": Profile("standard", 100, 500, "the default: every check at CI size", 0.25),
    "full": Profile("full", 1000, 5000, "the recipe's full matrices, every example on every plan; for GPU hosts", 1.0),
}

#: Default max model length: small enough for the CPU engine, the recipe's 65536 for real models.
DEFAULT_MAX_MODEL_LEN_TINY = 8192
DEFAULT_MAX_MODEL_LEN_REAL = 65536
STRICT_VALUES = {"on": True, "off": False}


@dataclass(frozen=True)
class Settings:
    """Everything the plugin needs, decided once per session."""

    models: tuple[ModelInfo, ...]
    gpus: int
    gpus_from: str  # "option" or "detected"
    plans: tuple[Plan, ...]
    strict_modes: tuple[bool, ...]
    base_url: str | None
    api_key: str | None
    max_model_len: int
    startup_timeout: float
    server_args: tuple[str, ...]
    profile: Profile
    log_dir: Path
    cache_dir: Path | None
    known_failures_dir: Path | None
    thresholds: Path | None = None
    save_baseline: Path | None = None
    baseline_margin: float = 0.2
    bench_dir: Path = Path(".glm45/bench")
    report_dir: Path | None = None
    compare_to: Path | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    matrix: tuple[Configuration, ...] = field(default=())

    @property
    def engine(self) -> str:
        if self.base_url:
            return "remote"
        return "cpu" if self.gpus <= 0 else "gpu"

    def examples(self, n: int, config: Configuration | None) -> int:
        """How many of `n` generated examples a check draws on `config`: all of them on a model's
        first parallel plan (and on a server given by URL), the profile's other_plans_share elsewhere."""
        first = config is None or not self.plans or config.plan == self.plans[0]
        return n if first else max(1, round(n * self.profile.other_plans_share))


def _split(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items: list[str] = []
        for v in value:
            items.extend(_split(v))
        return items
    return [p.strip() for p in str(value).replace("\n", ",").split(",") if p.strip()]


def _int(option: str, value: Any, minimum: int, accepted: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise SettingsError(option, value, accepted) from None
    if number < minimum:
        raise SettingsError(option, value, accepted)
    return number


def resolve_settings(
    values: Mapping[str, Any],
    *,
    detected_gpus: Callable[[], int],
    cpu_cores: int,
    rootdir: Path,
) -> Settings:
    """Validate raw option values (None = not given) into Settings with the matrix built."""
    names = _split(values.get("model")) or ["tiny"]
    models = []
    for name in names:
        try:
            models.append(resolve_model(name, path_exists=Path(name).expanduser().is_dir()))
        except UnknownModel:
            raise SettingsError(
                "--glm45-model",
                name,
                f"accepted: an alias ({', '.join(ALIASES)}), a hub id such as zai-org/GLM-4.5-Air, "
                "or the path of a local model directory; several as a comma list",
            ) from None

    if values.get("gpus") is not None:
        gpus = _int("--gpus", values["gpus"], 0, "accepted: a whole number of GPUs, 0 or more (0 = the CPU engine)")
        gpus_from = "option"
    else:
        gpus, gpus_from = detected_gpus(), "detected"

    plan_texts = _split(values.get("parallel"))
    plans: list[Plan] = []
    for text in plan_texts:
        try:
            plan = parse_plan(text)
        except PlanError as exc:
            raise SettingsError("--glm45-parallel", text, str(exc)) from None
        if gpus_from == "option" and gpus > 0 and plan.gpus > gpus:
            raise SettingsError(
                "--glm45-parallel",
                text,
                f"{plan.id} needs {plan.gpus} GPUs but --gpus is {gpus}; accepted: plans of at most {gpus} GPUs",
            )
        plans.append(plan)
    if not plans:
        plans = list(default_plans(gpus))

    strict_given = bool(_split(values.get("strict_tools")))
    strict_texts = _split(values.get("strict_tools")) or ["on", "off"]
    strict_modes = []
    for text in strict_texts:
        if text.lower() not in STRICT_VALUES:
            raise SettingsError("--glm45-strict-tools", text, "accepted: on, off, or on,off (both, as two servers)")
        strict_modes.append(STRICT_VALUES[text.lower()])

    base_url = (values.get("base_url") or "").strip() or None
    if base_url and not base_url.startswith(("http://", "https://")):
        raise SettingsError("--glm45-base-url", base_url, "accepted: an http:// or https:// URL such as http://10.0.0.5:8000")
    api_key = values.get("api_key") or os.environ.get("GLM45_API_KEY") or None

    if values.get("max_model_len") is not None:
        max_len = _int("--glm45-max-model-len", values["max_model_len"], 16, "accepted: a whole number of tokens, 16 or more")
        too_long = [m for m in models if max_len > m.max_position_embeddings]
        if too_long:
            raise SettingsError(
                "--glm45-max-model-len",
                max_len,
                f"{too_long[0].alias} has max_position_embeddings {too_long[0].max_position_embeddings}; "
                "accepted: up to that",
            )
    else:
        max_len = DEFAULT_MAX_MODEL_LEN_TINY if all(m.is_tiny for m in models) else DEFAULT_MAX_MODEL_LEN_REAL

    try:
        timeout = float(values.get("startup_timeout") or 900)
    except ValueError:
        raise SettingsError("--glm45-startup-timeout", values.get("startup_timeout"), "accepted: seconds, e.g. 900") from None
    if timeout <= 0:
        raise SettingsError("--glm45-startup-timeout", timeout, "accepted: a positive number of seconds")

    profile_name = (values.get("profile") or "standard").strip()
    if profile_name not in PROFILES:
        raise SettingsError("--glm45-profile", profile_name, f"accepted: {', '.join(PROFILES)}")

    log_dir = Path(values.get("log_dir") or rootdir / ".glm45" / "logs")
    cache_dir = Path(values["cache_dir"]) if values.get("cache_dir") else None
    kf = values.get("known_failures")
    thresholds_path = _existing_file("--glm45-thresholds", values.get("thresholds"))
    if thresholds_path is None and all(m.is_tiny for m in models):
        from importlib import resources

        thresholds_path = Path(str(resources.files("pytest_glm45").joinpath("thresholds").joinpath("embedded-default.toml")))
    try:
        margin = float(values.get("baseline_margin") or 0.2)
    except ValueError:
        raise SettingsError("--glm45-baseline-margin", values.get("baseline_margin"), "accepted: a fraction such as 0.2") from None
    if not 0 <= margin < 1:
        raise SettingsError("--glm45-baseline-margin", margin, "accepted: a fraction from 0 up to (not including) 1")
    save_baseline = Path(values["save_baseline"]) if values.get("save_baseline") else None
    bench_dir = Path(values.get("bench_dir") or ".glm45/bench")
    compare_to = Path(values["compare_to"]) if values.get("compare_to") else None
    if compare_to is not None and not compare_to.is_file():
        raise SettingsError("--glm45-compare-to", str(compare_to), "accepted: the path of an existing report.json")
    tolerances: dict[str, float] = {}
    for item in _split(values.get("tolerance")):
        metric, _, number = item.partition("=")
        try:
            tolerances[metric.strip()] = float(number)
        except ValueError:
            raise SettingsError("--glm45-tolerance", item, "accepted: metric=fraction pairs, e.g. output_throughput=0.1") from None
    settings = Settings(
        models=tuple(models),
        gpus=gpus,
        gpus_from=gpus_from,
        plans=tuple(plans),
        strict_modes=tuple(dict.fromkeys(strict_modes)),
        base_url=base_url,
        api_key=api_key,
        max_model_len=max_len,
        startup_timeout=timeout,
        server_args=tuple(split_server_args(values.get("server_args"))),
        profile=PROFILES[profile_name],
        log_dir=log_dir if log_dir.is_absolute() else rootdir / log_dir,
        cache_dir=cache_dir,
        known_failures_dir=Path(kf) if kf else None,
        thresholds=thresholds_path,
        save_baseline=save_baseline,
        baseline_margin=margin,
        bench_dir=bench_dir if bench_dir.is_absolute() else rootdir / bench_dir,
        report_dir=Path(values["report"]) if values.get("report") else None,
        compare_to=compare_to,
        tolerances=tolerances,
    )
    if base_url:
        return settings
    matrix = build_matrix(
        settings.models, settings.plans, settings.strict_modes, gpus, cpu_cores, max_len, lax_first_plan_only=not strict_given
    )
    return Settings(**{**settings.__dict__, "matrix": matrix})


def _existing_file(option: str, value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if not path.is_file():
        raise SettingsError(option, str(value), "accepted: the path of an existing TOML file")
    from pytest_glm45 import thresholds

    try:
        thresholds.load(path)
    except thresholds.ThresholdsError as exc:
        raise SettingsError(option, str(value), f"the file does not parse ({exc})") from None
    return path


def split_server_args(value: Any) -> list[str]:
    """Server args: repeatable option values, each split on whitespace (`--x 1` is two args)."""
    if not value:
        return []
    if isinstance(value, str):
        value = value.splitlines()
    out: list[str] = []
    for item in value:
        out.extend(str(item).split())
    return out

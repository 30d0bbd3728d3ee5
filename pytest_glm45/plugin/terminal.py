"""The terminal: live progress lines, the session header, per-configuration summaries, reproducer lists."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from pytest_glm45.plugin.outcomes import REPRODUCED
from pytest_glm45.plugin.scheduling import rank
from pytest_glm45.plugin.state import config_id_of, maybe_state, state_of
from pytest_glm45.records.verdict import Verdicts


class Reporter:
    """Progress lines on the terminal while models build, servers boot and stop, suites and load
    runs go: live lines rewritten in place on a terminal, only the final lines on a pipe, nothing
    under -q."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

        #: A live line stands unfinished on the terminal (one reporter per session: every writer shares it).
        self._live = False

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
            width = max(20, self.config.get_terminal_writer().fullwidth - 1)
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


class SuiteProgress:
    """Per suite (test file) per configuration: how many of its checks are done, the time since its
    first check's setup (its server's boot excluded) and the time left at the pace so far."""

    #: seconds between two live lines of one suite (each one starts a line below pytest's dots)
    EVERY = 5.0

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.group: dict[str, tuple[str, str]] = {}
        self.total: dict[tuple[str, str], int] = {}
        self.done: dict[tuple[str, str], int] = {}
        self.started: dict[tuple[str, str], float] = {}
        self.shown: dict[tuple[str, str], float] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Count each suite's checks per configuration (the long answers, run after the rest, as one group)."""
        for item in session.items:
            config_id = config_id_of(item)
            if config_id is not None:
                key = ("long answers" if rank(item) == 1 else item.path.stem, config_id)
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


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What the session serves: profile, models, engine, configurations, GPUs."""
    state = maybe_state(config)
    if state is None:
        return []
    settings = state.settings
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
    settings = state_of(config).settings
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
    state = maybe_state(config)
    if state is None or not state.pool.history:
        return
    pool, verdicts = state.pool, state.verdicts
    tr = terminalreporter
    tr.section("glm45 configurations")
    why = state.sampled
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
    quiet = Counter(source for _, _, source in verdicts.quiet_intermittent)
    for source, n in sorted(quiet.items()):
        tr.write_line(f"intermittent known failure {source} did not show on {n} check(s) this run (passed; the entry "
                      "says it comes and goes)")  # fmt: skip
    _reproducers_summary(tr, verdicts, config)
    if state.throughput is not None:
        from pytest_glm45.measure.throughput import summary

        for line in summary(state.throughput.points):
            tr.write_line(line)
    settings = state_of(config).settings
    if state.throughput is not None:  # beside the throughput figures: what each decode mode does to them
        from pytest_glm45.measure.decode_cost import lines

        cost = lines(settings.matrix, state.throughput.points, settings.engine)
        if cost:
            tr.section("glm45 decode modes: throughput against the same flags")
            for line in cost:
                tr.write_line(line)
    if settings.report_dir is not None:
        tr.write_line(f"report: {settings.report_dir / 'report.json'} and {settings.report_dir / 'report.html'}")
    comparison = state.comparison
    if comparison is not None:
        tr.section("glm45 comparison")
        tr.write_line(comparison.markdown())

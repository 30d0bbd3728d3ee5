"""Report writing at the session's end: the baseline saved, report.json/html written, the comparison made;
the parity verdicts a pytest-xdist worker left and what each worker learned merged into the controller's."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_glm45.plugin.fixtures import parity_of, throughput_of
from pytest_glm45.plugin.state import maybe_state, state_of


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist: a worker finished; take what it learned (boots, verdicts, throughput points, parity recordings)."""
    from pytest_glm45.measure.sidebyside import OUTPUT_KEY, merge

    config: pytest.Config = node.config
    data = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
    state = maybe_state(config)
    if data and state is not None:
        merge(data, state.pool.history, state.verdicts, throughput_of(config).points, lambda: parity_of(config))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Save the baseline, write the report, compare with the reference run (in a pytest-xdist
    worker: hand what it learned to the controller, which does all of that for the whole run)."""
    config = session.config
    state = maybe_state(config)
    if state is None:
        return
    settings, tp = state.settings, state.throughput
    if hasattr(config, "workerinput"):
        from pytest_glm45.measure.sidebyside import OUTPUT_KEY, pack

        config.workeroutput[OUTPUT_KEY] = pack(state.pool.history, state.verdicts,  # type: ignore[attr-defined]
                                               tp.points if tp is not None else [], state.parity)  # fmt: skip
        return
    if state.parity is not None:  # parity checks whose reference ran on another pytest-xdist worker are judged now
        from pytest_glm45.measure.parity_session import settle_verdicts

        lines, failed = settle_verdicts(state.parity, state.verdicts)
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
            state.reporter.line(f"glm45: baseline not saved: {exc}")
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.report_dir is None and settings.compare_to is None:
        return
    from pytest_glm45.reports import report

    data = report.build(settings, state_of(config).pool.history, state_of(config).verdicts, tp.points if tp is not None else [],
                        state.log_excerpts, (state.pool.api_key,),
                        parity=state.parity.to_report() if state.parity is not None else None)  # fmt: skip
    if settings.compare_to is not None:
        from pytest_glm45.reports import compare

        comparison = compare.compare(report.load(settings.compare_to), data, settings.tolerances,
                                     accept_missing=settings.accept_missing)  # fmt: skip
        state.comparison = comparison
        report.attach_comparison(data, comparison)
        if comparison.regressed:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if settings.report_dir is not None:
        report.write(data, settings.report_dir)

"""The verdict hooks: a dead server fails at once, known failures and unexpected passes are judged on each
phase, a failing check carries its reproducer and its server's log, and the verdict goes into JUnit properties."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.plugin.fixtures import ensure_alive
from pytest_glm45.plugin.state import CHECK_ID, RECORDER, SERVER_SAID, config_id_of, handle_of, state_of
from pytest_glm45.records.verdict import Verdicts


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """Fail at once, with the exit code and the log tail, when the server has died."""
    handle = handle_of(item)
    if handle is not None:
        ensure_alive(handle)


def _observed(report: pytest.TestReport) -> str:
    """What a failing phase said: the exception's message, or a skip's reason."""
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    if report.failed:
        crash = getattr(report.longrepr, "reprcrash", None)
        return str(crash.message if crash is not None else report.longreprtext)
    return ""


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
    handle = handle_of(item)
    if handle is None or handle.known is None or not handle.alive():
        return None
    observed = _with_server_log(item, handle, excinfo.exconly(tryshort=True))
    entry = handle.known.lookup(item.stash.get(CHECK_ID, item.nodeid), handle.config_id, _model_family(handle), observed)
    if entry is None or not entry.signature.matches(observed):
        return None
    sections = [(f"Captured {key} {when}", content) for when, key, content in item._report_sections]  # no public reader of captured sections
    return pytest.TestReport(item.nodeid, item.location, {name: 1 for name in item.keywords}, "failed",
                             excinfo.getrepr(style="native"), call.when, sections, call.duration, call.start, call.stop,
                             user_properties=item.user_properties)  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Apply the verdict (known failures, unexpected passes) to each phase and record it in the one tally."""
    report: pytest.TestReport = yield
    config_id = config_id_of(item)
    if config_id is None:
        return report
    verdicts = state_of(item.config).verdicts
    check = item.stash.get(CHECK_ID, item.nodeid)
    verdicts.add_seconds(check, config_id, report.duration or 0.0)
    if report.when != "call" and report.passed:
        _junit_properties(report, verdicts, check, config_id)
        return report
    handle = handle_of(item)
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
        state_of(item.config).log_excerpts.setdefault((check, config_id), handle.log_tail(40))
    _junit_properties(report, verdicts, check, config_id)
    return report


def _attach_reproducer(item: pytest.Item, report: pytest.TestReport, verdicts: Verdicts, check: str, config_id: str,
                       handle: ServerHandle | None) -> None:  # fmt: skip
    """A failing or known-failing check's requests, as the report keeps them and as a `glm45 reproducer`
    section under the failure: the curl command (written to a file beside the server logs when long)."""
    record = verdicts.records.get((check, config_id))
    recorder = item.stash.get(RECORDER, None)
    if record is None or recorder is None or record.reproducer is not None or record.outcome not in REPRODUCED:
        return
    settings = state_of(item.config).settings
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

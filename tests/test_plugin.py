"""The plugin through pytester: options, ini keys, ids, one boot per configuration, errors."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from standin import assert_all_gone, log_pids

USES_SERVER = """
def test_a(glm45_server):
    assert glm45_server.base_url

def test_b(glm45_server):
    assert glm45_server.served_name
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


# -- usage errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--glm45-model", "nope"], ["--glm45-model: 'nope' is not accepted", "an alias (tiny, tiny-pp, tiny-4.7, air-fp8, air-bf16, fp8, bf16, glm-4.6"]),
        (["--gpus", "-1"], ["--gpus: '-1' is not accepted", "0 or more"]),
        (["--gpus", "two"], ["--gpus: 'two' is not accepted"]),
        (["--glm45-parallel", "tp3", "--gpus", "2"], ["--glm45-parallel: 'tp3' is not accepted", "tp1, tp8, dp2-tp4"]),
        (["--glm45-parallel", "tp4", "--gpus", "2"], ["tp4 needs 4 GPUs but --gpus is 2"]),
        (["--glm45-parallel", "px2"], ["'px2' is not a plan part"]),
        (["--glm45-parallel", "pp2"], ["stage 0 holds layers 0-0, all dense", "--glm45-model tiny-pp"]),
        (["--glm45-strict-tools", "maybe"], ["--glm45-strict-tools: 'maybe' is not accepted", "on, off"]),
        (["--glm45-profile", "huge"], ["--glm45-profile: 'huge' is not accepted", "smoke, standard, full"]),
        (["--glm45-max-model-len", "200000", "--glm45-model", "air-fp8"], ["max_position_embeddings 131072"]),
        (["--glm45-base-url", "localhost:8000"], ["--glm45-base-url: 'localhost:8000' is not accepted", "http://"]),
        (["--glm45-startup-timeout", "-5"], ["--glm45-startup-timeout"]),
    ],
)
def test_wrong_values_are_usage_errors(pytester: pytest.Pytester, args: list[str], expected: list[str]) -> None:
    pytester.makepyfile(USES_SERVER)
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for text in expected:
        assert text in err, err


def test_help_lists_every_option_in_one_group(pytester: pytest.Pytester) -> None:
    from pytest_glm45.plugin import OPTIONS

    out = pytester.runpytest_subprocess("--help").stdout.str()
    assert "GLM-4.5 serving conformance (pytest-glm45)" in out
    for flag, ini, *_ in OPTIONS:
        assert flag in out and ini in out


# -- the matrix and its ids -------------------------------------------------------------


def test_default_cpu_matrix_ids(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVER)
    result = run(pytester, "--collect-only", "-q", "--gpus", "0")
    result.stdout.fnmatch_lines(
        [
            "*test_a[[]tiny-bf16-tp1[]]",
            "*test_a[[]tiny-bf16-tp1-nostrict[]]",
            "*test_a[[]tiny-bf16-tp2[]]",
            "*6/12 tests collected (6 deselected)*",  # the decode modes run only the checks of what they change
        ]
    )


def test_ini_sets_plans_and_the_command_line_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVER)
    pytester.makeini("[pytest]\nglm45_parallel = tp2\nglm45_strict_tools = on\nglm45_gpus = 0\n")
    out = run(pytester, "--collect-only", "-q").stdout.str()
    assert "[tiny-bf16-tp2]" in out and "tp1" not in out
    out = run(pytester, "--collect-only", "-q", "--glm45-parallel", "tp1").stdout.str()
    assert "[tiny-bf16-tp1]" in out and "tp2" not in out


def test_gpu_ids_and_plans(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVER)
    out = run(pytester, "--collect-only", "-q", "--glm45-model", "air-fp8,fp8", "--gpus", "8", "--glm45-unrunnable", "skip",
              "--glm45-parallel", "tp8,dp2-tp4,tp8-ep", "--glm45-strict-tools", "on").stdout.str()  # fmt: skip
    for cid in ("air-fp8-tp8", "air-fp8-dp2-tp4", "air-fp8-tp8-ep", "glm45-fp8-tp8", "glm45-fp8-dp2-tp4"):
        assert f"[{cid}]" in out, out


def test_what_the_user_asked_for_and_the_host_cannot_run_fails_before_anything_boots(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVER)
    result = run(pytester, "--glm45-model", "air-fp8", "--gpus", "8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "this host cannot run what was asked for" in err and "air-fp8-tp8: preflight: tp8 needs 8 GPUs; this host has 0" in err
    assert "--glm45-unrunnable skip" in err

    result = run(pytester, "--gpus", "0", "--glm45-parallel", "dp2-tp1", "--glm45-strict-tools", "on")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "data parallel does not run on the CPU engine" in result.stderr.str()


def test_with_unrunnable_skip_what_the_machine_cannot_run_stays_visible_as_a_skip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVER)
    result = run(pytester, "-rs", "--gpus", "0", "--glm45-model", "air-fp8", "--glm45-parallel", "dp2-tp1,tp1",
                 "--glm45-strict-tools", "on", "--glm45-unrunnable", "skip")  # fmt: skip
    result.assert_outcomes(skipped=4)
    out = result.stdout.str()
    assert "GLM-4.5 weights need GPUs" in out

    result = run(pytester, "-rs", "--gpus", "0", "--glm45-parallel", "dp2-tp1", "--glm45-strict-tools", "on",
                 "--glm45-unrunnable", "skip")  # fmt: skip
    result.assert_outcomes(skipped=2)
    assert "data parallel does not run on the CPU engine" in result.stdout.str()


# -- booting, with the stand-in ---------------------------------------------------------


def test_one_setup_per_configuration_however_tests_interleave(pytester: pytest.Pytester, standin) -> None:
    pytester.makepyfile(test_one=USES_SERVER, test_two=USES_SERVER)
    result = run(pytester, "--setup-show", "--gpus", "0", "-p", "no:randomly")
    result.assert_outcomes(passed=12)
    out = result.stdout.str()
    for cid in ("tiny-bf16-tp1", "tiny-bf16-tp1-nostrict", "tiny-bf16-tp2"):
        assert out.count(f"SETUP    S glm45_server[{cid}]") == 1, out
        assert out.count(f"TEARDOWN S glm45_server[{cid}]") == 1
    assert "glm45 configurations" in out and "tiny-bf16-tp2: ready in" in out
    assert_all_gone(log_pids(pytester.path / ".glm45" / "logs"))


def test_crash_at_boot_errors_every_test_of_it_with_the_log(pytester: pytest.Pytester, standin) -> None:
    standin("crash-at-boot")
    pytester.makepyfile(USES_SERVER)
    result = run(pytester, "--gpus", "0", "--glm45-parallel", "tp1", "--glm45-strict-tools", "on")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "vLLM server for tiny-bf16-tp1 exited with code 3 during start" in out
    assert "RuntimeError: standin crashed at boot" in out
    assert out.count("booting tiny-bf16-tp1") == 1  # the failure is remembered, not retried per test
    assert_all_gone(log_pids(pytester.path / ".glm45" / "logs"))


def test_server_dying_mid_suite_fails_the_rest_fast_and_the_next_configuration_runs(
    pytester: pytest.Pytester, standin
) -> None:
    standin("die-after=1")
    pytester.makepyfile(
        """
        import httpx

        def chat(server):
            return httpx.post(server.base_url + "/v1/chat/completions", timeout=30,
                              headers={"Authorization": "Bearer " + server.api_key},
                              json={"model": server.served_name, "messages": []})

        def test_1(glm45_server):
            assert chat(glm45_server).status_code == 200

        def test_2(glm45_server):
            chat(glm45_server)

        def test_3(glm45_server):
            assert chat(glm45_server).status_code == 200
        """
    )
    started = time.monotonic()
    result = run(pytester, "--gpus", "0", "--glm45-strict-tools", "on")
    elapsed = time.monotonic() - started
    result.assert_outcomes(passed=2, failed=4)
    out = result.stdout.str()
    assert out.count("has exited with code 7 while the suite ran") >= 2
    assert "tiny-bf16-tp2: ready in" in out
    assert "died (exit code 7)" in out
    assert elapsed < 60, f"the dead server's tests took {elapsed:.0f} s: they must fail fast"
    assert_all_gone(log_pids(pytester.path / ".glm45" / "logs"))


def test_failed_test_report_carries_the_server_log_tail(pytester: pytest.Pytester, standin) -> None:
    pytester.makepyfile("def test_x(glm45_server):\n    assert False, 'deliberate'\n")
    result = run(pytester, "--gpus", "0", "--glm45-parallel", "tp1", "--glm45-strict-tools", "on")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "glm45 server log: tiny-bf16-tp1" in out
    assert "standin: listening" in out


def test_report_header_names_engine_and_configurations(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_SERVER)
    out = run(pytester, "--collect-only", "--gpus", "0").stdout.str()
    assert "glm45: profile standard, models tiny" in out
    assert "glm45: configurations tiny-bf16-tp1, tiny-bf16-tp1-nostrict, tiny-bf16-tp2" in out


def _default_sigint() -> None:
    # A shell that starts jobs in the background makes them ignore SIGINT, and Python then
    # never raises KeyboardInterrupt; a person's Ctrl-C comes with the default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SLOW_TEST = """
import time
def test_slow(glm45_server):
    print("RUNNING", flush=True)
    time.sleep(120)
"""


def _pytest_until_running(pytester: pytest.Pytester) -> tuple[subprocess.Popen[str], str]:
    """Start pytest on SLOW_TEST in a subprocess; return it once its test runs, with the output so far."""
    pytester.makepyfile(SLOW_TEST)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-s", "-p", "no:cacheprovider", "--gpus", "0", "--glm45-parallel", "tp1",
         "--glm45-strict-tools", "on"],
        cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
        preexec_fn=_default_sigint,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "RUNNING" in line:
            break
    return proc, "".join(lines)


def test_ctrl_c_during_a_run_leaves_nothing_running(pytester: pytest.Pytester, standin) -> None:
    proc, before = _pytest_until_running(pytester)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=60)[0]
    assert "KeyboardInterrupt" in out, before + out
    assert_all_gone(log_pids(pytester.path / ".glm45" / "logs"))


def test_sigterm_to_the_kit_stops_its_servers(pytester: pytest.Pytester, standin) -> None:
    standin("spawn-child")
    proc, _ = _pytest_until_running(pytester)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=90)
    pids = log_pids(pytester.path / ".glm45" / "logs")
    assert len(pids) == 2
    assert_all_gone(pids)


def test_base_url_boots_nothing_and_probes_replay(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from standin import standin_spec

    from pytest_glm45.engine.server import ServerProcess

    spec = standin_spec("ok", served_name="remote-model")
    with ServerProcess(spec, tmp_path / "remote.log", api_key="remote-key-123456", startup_timeout=30) as remote:
        pytester.makepyfile(
            """
            def test_remote(glm45_server):
                assert glm45_server.config_id == "remote"
                assert glm45_server.served_name == "remote-model"
                assert glm45_server.replay_loaded
                assert not glm45_server.booted
            """
        )
        result = run(pytester, "--glm45-base-url", remote.base_url, "--glm45-api-key", "remote-key-123456")
        result.assert_outcomes(passed=1)
        assert "booting" not in result.stdout.str()
        result = run(pytester, "--glm45-base-url", remote.base_url, "--glm45-api-key", "wrong")
        result.assert_outcomes(errors=1)
        assert "set --glm45-api-key or GLM45_API_KEY" in result.stdout.str()


def test_strict_irrelevant_suites_skip_the_lax_twin_visibly(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.glm45_strict_irrelevant

        def test_x(glm45_server):
            pass
        """
    )
    result = run(pytester, "-rs", "--collect-only", "-q", "--gpus", "0")
    assert "test_x[tiny-bf16-tp1-nostrict]" in result.stdout.str()
    result = run(pytester, "-rs", "--gpus", "0", "--glm45-parallel", "tp1", "-k", "nostrict")
    result.assert_outcomes(skipped=1)
    assert "tool-calling strictness does not change what this check measures" in result.stdout.str()


# -- the verdict's edges ------------------------------------------------------------------


@pytest.mark.parametrize(("profile", "examples"), [("smoke", 20), ("standard", 100), ("full", 1000)])
def test_the_profile_sets_hypothesis_example_counts(pytester: pytest.Pytester, profile: str, examples: int) -> None:
    """The installed plugin applies the profile (no conftest.py in the tested project)."""
    pytester.makepyfile(
        f"""
        from hypothesis import settings

        def test_count():
            assert settings.default.max_examples == {examples}
            assert settings.default.deadline is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm45-profile", profile)
    result.assert_outcomes(passed=1)


def test_a_booted_server_that_does_not_replay_is_an_error_stated_once(pytester: pytest.Pytester, standin) -> None:
    standin("no-replay")
    pytester.makepyfile(
        """
        def test_one(glm45_replay):
            pass

        def test_two(glm45_replay):
            pass
        """
    )
    result = run(pytester, "--gpus", "0", "--glm45-parallel", "tp1", "--glm45-strict-tools", "on")
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    assert "does not replay: the replay probe's script did not come back" in out
    # Once in the errors' own sections (pytest's short summary repeats messages whole when CI is set).
    assert out.split("short test summary info")[0].count("Last lines of the log") == 1, out
    assert "the whole error, with the log tail, is on this configuration's first check" in out
    assert "tiny-bf16-tp1: ready in" in out and "no replay" in out


def test_a_remote_server_without_replay_skips_naming_the_flag(pytester: pytest.Pytester, tmp_path: Path) -> None:
    from standin import standin_spec

    from pytest_glm45.engine.server import ServerProcess

    with ServerProcess(standin_spec("no-replay", served_name="remote-model"), tmp_path / "r.log", startup_timeout=30) as remote:
        pytester.makepyfile(
            """
            import pytest

            def test_replayed(glm45_replay):
                pass

            @pytest.mark.glm45_live
            def test_live(glm45_server):
                pass
            """
        )
        result = run(pytester, "-rs", "--glm45-base-url", remote.base_url)
        result.assert_outcomes(skipped=2)
        out = result.stdout.str()
        assert "--logits-processors pytest_glm45.replay_processor:ReplayLogitsProcessor" in out
        assert "is not declared as such; add --glm45-model" in out
        assert "strict tool calling assumed (vLLM's default; declare with --glm45-strict-tools)" in out
        declared = run(pytester, "-rs", "--glm45-base-url", remote.base_url, "--glm45-model", "air-fp8", "--glm45-strict-tools", "off")
        declared.assert_outcomes(passed=1, skipped=1)
        assert "[remote-nostrict]" in declared.stdout.str() or "remote-nostrict" in declared.stdout.str()


BOOT_AHEAD = """
def test_one(glm45_server):
    assert glm45_server.base_url

def test_two(glm45_server):
    assert glm45_server.served_name
"""


def test_every_configuration_boots_beside_the_first_as_the_session_starts(pytester: pytest.Pytester, standin: Any) -> None:
    pytester.makepyfile(BOOT_AHEAD)
    result = run(pytester, "--gpus", "0", "--glm45-parallel", "tp1,tp2", "-v")  # tp1, tp1-nostrict, tp2
    result.assert_outcomes(passed=6)
    out = result.stdout.str()
    for config in ("tiny-bf16-tp1-nostrict", "tiny-bf16-tp2"):
        ahead = out.index(f"glm45: booting {config}, ahead of its turn")
        assert "beside tiny-bf16-tp1's boot" in out[ahead : ahead + 200]
        assert ahead < out.index("test_one[tiny-bf16-tp1] PASSED"), "it boots as the session starts"
        assert out.count(f"glm45: booting {config}") == 1, "booted once"
        assert f"{config}: ready in" in out
    assert "then booting" not in out, "a server booted ahead is recorded as ready"


def test_boots_ahead_are_planned_around_the_throughput_points() -> None:
    """Every configuration boots as the session starts, unless its first check measures; then a later one
    once the last throughput point before it is done; a point waits for boots ahead (settle_boots)."""
    from types import SimpleNamespace

    from pytest_glm45.plugin import plan_boots_ahead

    def item(name: str, measures: bool = False) -> tuple[str, bool]:
        return name, measures

    a, b, c = (SimpleNamespace(id=name, skip_reason=None) for name in "abc")
    runs = [(a, [item("a1"), item("a2", True)]), (b, [item("b1"), item("b2")]), (c, [item("c1", True)])]
    assert plan_boots_ahead(runs) == {"a1": [(b, "a", "before"), (c, "a", "before")]}
    runs[0] = (a, [item("a1", True), item("a2")])  # a point first: nothing boots beside it
    assert plan_boots_ahead(runs) == {"a1": [(b, "a", "after"), (c, "b", "after")]}
    runs[0] = (a, [item("a0", True)])
    runs[1] = (b, [item("b1"), item("b2", True)])
    assert plan_boots_ahead(runs) == {"a0": [(b, "a", "after")], "b2": [(c, "b", "after")]}
    c.skip_reason = "tp2 needs 2 CPU cores"  # nothing to boot
    assert plan_boots_ahead(runs) == {"a0": [(b, "a", "after")]}


# -- progress -------------------------------------------------------------------------------

PROGRESS = """
def test_one(glm45_server):
    assert glm45_server.base_url

def test_two(glm45_server):
    assert glm45_server.served_name

def test_three(glm45_server):
    assert glm45_server.served_name
"""


def test_progress_lines_name_the_boot_estimate_and_each_suite_and_stay_quiet_under_q(pytester: pytest.Pytester, standin: Any) -> None:
    """On a pipe: the boot says what it expects (nothing the first time, the previous boot after),
    and each suite on each configuration ends with one line; -q shows none of it."""
    pytester.makepyfile(test_progress=PROGRESS)
    args = ("--gpus", "0", "--glm45-parallel", "tp1", "--glm45-strict-tools", "on")
    first = run(pytester, *args)
    first.assert_outcomes(passed=3)
    out = first.stdout.str()
    assert "glm45: booting tiny-bf16-tp1 (log " in out and ") ... no estimate yet" in out, out
    first.stdout.re_match_lines([r"glm45: test_progress on tiny-bf16-tp1: 3/3 checks in \d+:\d\d$"])
    assert "checks, " not in out, "a pipe gets the final lines only"
    again = run(pytester, *args).stdout.str()
    assert re.search(r"glm45: booting tiny-bf16-tp1 \(log .*\) \.\.\. expected ~\d+:\d\d \(its previous boot\)", again), again
    quiet = run(pytester, *args, "-q")
    quiet.assert_outcomes(passed=3)
    assert "glm45:" not in quiet.stdout.str(), quiet.stdout.str()


class _FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _reporter(pytester: pytest.Pytester, tty: bool, *args: str) -> tuple[Any, _FakeTerminal]:
    """The plugin's reporter writing to a terminal reporter on a fake file (a terminal or a pipe)."""
    from _pytest.terminal import TerminalReporter

    from pytest_glm45.plugin import Reporter

    config = pytester.parseconfig(*args)
    out = _FakeTerminal(tty)
    tr = TerminalReporter(config, out)
    config.pluginmanager.unregister(name="terminalreporter")
    config.pluginmanager.register(tr, "terminalreporter")
    return Reporter(config), out


def test_live_progress_rewrites_one_line_on_a_terminal(pytester: pytest.Pytester) -> None:
    reporter, out = _reporter(pytester, True)
    reporter.progress("glm45: tiny-bf16-tp1 boots: 0:01 elapsed, no estimate yet", False)
    reporter.progress("glm45: tiny-bf16-tp1 boots: 0:02 elapsed, no estimate yet", False)
    reporter.line("glm45: tiny-bf16-tp1 ready in 2.0 s")
    reporter.progress("glm45: test_x on tiny-bf16-tp1: 1/2 checks, 0:01 elapsed, ~0:01 left", False)
    reporter.progress("glm45: test_x on tiny-bf16-tp1: 2/2 checks in 0:02", True)
    text = out.getvalue()
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]  # what a terminal shows
    assert lines == ["glm45: tiny-bf16-tp1 ready in 2.0 s", "glm45: test_x on tiny-bf16-tp1: 2/2 checks in 0:02", ""], repr(text)
    assert "\rglm45: tiny-bf16-tp1 boots: 0:02 elapsed" in text, "the live line is rewritten in place"


def test_progress_on_a_pipe_is_final_lines_only_and_nothing_under_q(pytester: pytest.Pytester) -> None:
    reporter, out = _reporter(pytester, False)
    reporter.progress("live", False)
    reporter.progress("done", True)
    assert out.getvalue() == "done\n"
    quiet, out = _reporter(pytester, True, "-q")
    quiet.progress("live", False)
    quiet.progress("done", True)
    quiet.line("a line")
    assert out.getvalue() == ""


def test_each_configurations_throughput_points_run_after_its_other_checks() -> None:
    from pytest_glm45.plugin import order_run

    items = [("a", "ctx"), ("a", "point1"), ("a", "point2"), ("a", "tools"), (None, "plain"), ("b", "point1"), ("b", "ctx")]
    ordered = order_run(items, lambda i: i[0], lambda i: 2 if i[1].startswith("point") else 0)
    assert ordered == [("a", "ctx"), ("a", "tools"), ("a", "point1"), ("a", "point2"), (None, "plain"), ("b", "ctx"), ("b", "point1")]


LONG_ANSWERS = """
import pytest
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    max_tokens: int | None = None


CASES = [Case("short", "Hi."), Case("long", "step " * 100), Case("cut", "word " * 100, max_tokens=4), Case("after", "Bye.")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_replayed(glm45_batch, case):
    pass


def test_unbatched(glm45_server):
    pass


@pytest.mark.parametrize("case", CASES[1:2], ids=["long"])
def test_not_batched_but_long(glm45_server, case):
    pass


@pytest.mark.glm45_long_answer
def test_marked_long(glm45_server):
    pass
"""


def test_a_long_scripted_answer_is_checked_after_its_configurations_other_checks(pytester: pytest.Pytester) -> None:
    """A batched case scripting a long answer (not one max_tokens cuts short), or a check marked
    glm45_long_answer, moves behind the rest of its configuration's checks, so its requests run beside
    them; the others keep their order."""
    pytester.makepyfile(test_long=LONG_ANSWERS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q", "--gpus", "0", "--glm45-parallel", "tp1",
                                "--glm45-strict-tools", "on")  # fmt: skip
    ids = [line.split("::", 1)[1] for line in result.stdout.lines if line.startswith("test_long.py::")]
    assert ids == ["test_replayed[tiny-bf16-tp1-short]", "test_replayed[tiny-bf16-tp1-cut]", "test_replayed[tiny-bf16-tp1-after]",
                   "test_unbatched[tiny-bf16-tp1]", "test_not_batched_but_long[tiny-bf16-tp1-long]",
                   "test_replayed[tiny-bf16-tp1-long]", "test_marked_long[tiny-bf16-tp1]"], result.stdout.str()  # fmt: skip


REMOTE_47 = """
import pytest
from pytest_glm45.records.known_failures import KnownFailure, KnownFailures, Signature

def test_declared_model(glm45_server, glm45_replay):
    assert glm45_server.model is not None and glm45_server.model.alias == "glm-4.7"
    assert glm45_server.model_family == "glm-4.7"
    assert glm45_replay.opens_think  # GLM-4.7's template opens <think> itself

def test_family_limited_entry(glm45_server):
    only_45 = KnownFailure(("*",), "r", Signature(match="x"), {}, models=("glm-4.5*", "glm-4.6*"))
    assert not only_45.covers("t::x", glm45_server.config_id, glm45_server.model_family)
"""


def test_a_remote_server_keeps_the_model_the_user_declared(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """--glm45-base-url with --glm45-model glm-4.7: the kit judges with GLM-4.7's template and family, not GLM-4.5's."""
    from standin import standin_spec

    from pytest_glm45.engine.server import ServerProcess

    with ServerProcess(standin_spec("ok", served_name="glm47"), tmp_path / "r.log", startup_timeout=30) as remote:
        pytester.makepyfile(REMOTE_47)
        result = run(pytester, "--glm45-base-url", remote.base_url, "--glm45-model", "glm-4.7")
        result.assert_outcomes(passed=2)

"""Known failures: the file format, signatures, and the verdicts (known, new, unexpected pass) through pytester."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_glm45.records.known_failures import (
    KnownFailures,
    KnownFailuresError,
    Signature,
    glob_match,
    load,
    normalize_version,
    parse,
)
from pytest_glm45.records.verdict import Verdicts

ENTRY = """
[[failure]]
checks = ["test_kf::test_broken"]
configs = ["*-tp1"]
reason = "vLLM gets it wrong"
signature = { status = 500, match = "Internal server error" }
evidence = { request = "POST /v1/chat/completions {}", expected = "200", got = "HTTP 500 Internal server error" }
"""

TESTS = """
import os

def test_broken(glm45_server):
    raise AssertionError(os.environ.get("KF_FAILURE", "HTTP 500: Internal server error"))

def test_fine(glm45_server):
    pass
"""


def test_parse_and_lookup(tmp_path: Path) -> None:
    (tmp_path / "vllm-1.2.3.toml").write_text(ENTRY)
    kf = load("1.2.3+cpu", tmp_path)
    assert kf.lookup("test_kf::test_broken", "tiny-bf16-tp1") is not None
    assert kf.lookup("test_kf::test_broken", "tiny-bf16-tp2") is None
    assert kf.lookup("test_kf::test_fine", "tiny-bf16-tp1") is None
    assert load("9.9.9", tmp_path).entries == []
    assert normalize_version("0.32.0+cpu") == "0.32.0"


def test_one_entry_covers_many_checks_by_pattern_with_literal_brackets() -> None:
    entry = parse('[[failure]]\nchecks = ["t::test_replay[native-*]", "t::other"]\nreason = "r"\n'
                  'signature = {status = 400}\nevidence = {got = "g"}\n')[0]  # fmt: skip
    assert entry.covers("t::test_replay[native-format-plain]", "tiny-bf16-tp1")
    assert entry.covers("t::other", "tiny-bf16-tp1")
    assert not entry.covers("t::test_replay[compact-format-plain]", "tiny-bf16-tp1")
    assert glob_match("a[b]", "a[b]") and not glob_match("ab", "a[b]")  # brackets are not a character class


WHOLE_FORMAT = """
[[failure]]
checks = ["test_tool_calling::test_replay[*-native-*]", "!test_tool_calling::test_replay[*-as-text-native-*]"]
configs = ["*", "!*-nostrict"]
reason = "the strict grammar rejects GLM-4.5's native format"
signature = { status = 500, match = "server log: .*grammar rejected tokens" }
evidence = { got = "HTTP 500" }
"""


def test_one_entry_records_a_whole_format_and_another_failure_of_a_covered_check_is_new(tmp_path: Path) -> None:
    (tmp_path / "vllm-1.2.3.toml").write_text(WHOLE_FORMAT)
    kf = load("1.2.3", tmp_path)
    v = Verdicts()
    for case in ("one-call-native-plain", "typed-values-native-stream", "zero-args-native-plain"):
        judged = v.judge(f"test_tool_calling::test_replay[{case}]", "tiny-bf16-tp1", "call", "failed",
                         "Failed: HTTP 500: Internal Server Error\nscript: '<tool_call>get_weather\\n...'"
                         "\nserver log: ERROR Unexpected: grammar rejected tokens [198] for request chatcmpl-glm45-1", kf)  # fmt: skip
        assert judged.outcome == "known failure", case
    # A covered check that fails another way (a wrong value, HTTP 200) is a new failure naming the entry.
    other = v.judge("test_tool_calling::test_replay[integer-native-plain]", "tiny-bf16-tp1", "call", "failed",
                    "parsed calls differ\ngot: calls=[('record', '{\"count\": \"42\"}')]", kf)  # fmt: skip
    assert other.outcome == "failed" and other.note is not None and "does not match" in other.note
    # Not covered: the other format, the excluded spelling, lax servers.
    assert kf.lookup("test_tool_calling::test_replay[integer-compact-plain]", "tiny-bf16-tp1") is None
    assert kf.lookup("test_tool_calling::test_replay[tool-call-open-as-text-native-plain]", "tiny-bf16-tp1") is None
    assert kf.lookup("test_tool_calling::test_replay[integer-native-plain]", "tiny-bf16-tp1-nostrict") is None
    assert v.judge("test_tool_calling::test_replay[integer-compact-plain]", "tiny-bf16-tp1", "call", "failed",
                   "HTTP 500: Internal Server Error", kf).outcome == "failed"  # fmt: skip


def test_an_entry_of_exclusions_only_is_refused() -> None:
    with pytest.raises(KnownFailuresError, match="not a !exclusion"):
        parse('[[failure]]\nchecks = ["!t::x"]\nreason = "r"\nsignature = {status = 400}\nevidence = {got = "g"}\n', "f.toml")


def test_signature_matches_status_and_pattern() -> None:
    sig = Signature(status=500, match=r"grammar")
    assert sig.matches("HTTP 500: grammar rejected tokens")
    assert not sig.matches("HTTP 400: grammar")
    assert not sig.matches("HTTP 500: something else")
    assert Signature(match="content=None").matches("got: reasoning='x' content=None")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('[[failure]]\ncheck = "x"\nreason = "y"\nsignature = {status = 400}\n', "lacks evidence"),
        ('[[failure]]\ncheck = "x"\nreason = "y"\nevidence = {got = "g"}\n', "lacks a signature"),
        ('[[failure]]\ncheck = "x"\nreason = "y"\nsignature = {match = "(("}\nevidence = {got = "g"}\n', "not a regular expression"),
        ('[[failure]]\ncheck = "x"\nreason = "y"\nsignature = {code = 5}\nevidence = {got = "g"}\n', "lacks a signature"),
    ],
)
def test_an_entry_without_what_it_needs_is_refused(text: str, error: str) -> None:
    with pytest.raises(KnownFailuresError, match=error):
        parse(text, "f.toml")


def test_shipped_files_parse() -> None:
    from pytest_glm45.records.known_failures import default_dir

    files = sorted(default_dir().glob("vllm-*.toml"))
    assert files
    for f in files:
        entries = parse(f.read_text(), str(f))
        assert all(e.evidence.get("got") for e in entries), f


def test_exclusion_patterns() -> None:
    entry = parse('[[failure]]\ncheck = "c"\nreason = "r"\nconfigs = ["*", "!*-nostrict"]\nsignature = {status = 400}\n'
                  'evidence = {got = "g"}\n')[0]  # fmt: skip
    assert entry.covers("c", "tiny-bf16-tp1") and entry.covers("c", "air-fp8-tp8")
    assert not entry.covers("c", "tiny-bf16-tp1-nostrict")


def test_a_check_with_two_recorded_defects_is_judged_by_the_entry_its_failure_matches() -> None:
    """A surface check can show a parser's defect and a surface's own: the entry whose signature the
    failure matches speaks for it, whichever comes first; a failure matching neither is new."""
    text = (
        '[[failure]]\nchecks = ["test_s::test_r[*-tags-*]"]\nreason = "parser"\nsignature = { match = "calls differ" }\n'
        'evidence.request = "r"\nevidence.expected = "e"\nevidence.got = "g"\n'
        '[[failure]]\nchecks = ["test_s::test_r[messages-*-stream]"]\nreason = "surface"\nsignature = { match = "signature: Field required" }\n'
        'evidence.request = "r"\nevidence.expected = "e"\nevidence.got = "g"\n'
    )
    kf = KnownFailures("0.0.1", parse(text, "v.toml"))
    check = "test_s::test_r[messages-tags-x-stream]"
    assert kf.lookup(check, "c").reason == "parser"
    assert kf.lookup(check, "c", observed="ThinkingBlock.signature: Field required").reason == "surface"
    assert kf.lookup(check, "c", observed="parsed calls differ").reason == "parser"
    verdicts = Verdicts()
    assert verdicts.judge(check, "c", "call", "failed", "ThinkingBlock.signature: Field required", kf).outcome == "known failure"
    new = verdicts.judge(check, "c", "call", "failed", "HTTP 500", kf)
    assert new.outcome == "failed" and new.entry is not None and new.entry.reason == "parser"


def test_verdicts_directly(tmp_path: Path) -> None:
    (tmp_path / "vllm-1.2.3.toml").write_text(ENTRY)
    kf = load("1.2.3", tmp_path)
    v = Verdicts()
    assert v.judge("test_kf::test_broken", "tiny-bf16-tp1", "call", "failed", "HTTP 500: Internal server error", kf).outcome == "known failure"
    other = v.judge("test_kf::test_broken", "tiny-bf16-tp1", "call", "failed", "HTTP 400: bad request", kf)
    assert other.outcome == "failed" and other.note is not None and "does not match" in other.note and "HTTP 400" in other.note
    xpass = v.judge("test_kf::test_broken", "tiny-bf16-tp1", "call", "passed", "", kf)
    assert xpass.outcome == "unexpected pass" and xpass.failure is not None and "remove" in xpass.failure
    assert v.judge("test_kf::test_broken", "tiny-bf16-tp1", "setup", "failed", "boom", kf).outcome == "error"
    assert Verdicts(strict_known_failures=False).judge("test_kf::test_broken", "tiny-bf16-tp1", "call", "passed", "",
                                                      kf).failure is None  # fmt: skip


@pytest.fixture
def kf_dir(tmp_path: Path) -> Path:
    d = tmp_path / "kf"
    d.mkdir()
    return d


def run(pytester: pytest.Pytester, kf_dir: Path, *extra: str) -> pytest.RunResult:
    pytester.makepyfile(test_kf=TESTS)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rxX", "--gpus", "0", "--glm45-parallel", "tp1",
                                         "--glm45-strict-tools", "on", "--glm45-known-failures", str(kf_dir), *extra)  # fmt: skip


def test_known_failure_does_not_fail_the_run(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY)
    result = run(pytester, kf_dir)
    assert result.ret == 0
    result.assert_outcomes(passed=1, xfailed=1)
    assert "known failure on vLLM 0.0.0-standin (vllm-0.0.0-standin.toml#1): vLLM gets it wrong" in result.stdout.str()


def test_a_known_failure_that_fails_differently_is_a_new_failure(pytester: pytest.Pytester, standin, kf_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY)
    monkeypatch.setenv("KF_FAILURE", "HTTP 400: the request was refused")
    result = run(pytester, kf_dir)
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "covered by known failure vllm-0.0.0-standin.toml#1" in out and "does not match it" in out
    assert "Observed: AssertionError: HTTP 400: the request was refused" in out
    assert "new failure on tiny-bf16-tp1: test_kf::test_broken fails, but not as known failure" in out


def test_removing_the_entry_makes_the_run_fail(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    result = run(pytester, kf_dir)
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)


def test_an_unexpected_pass_fails_the_run_naming_the_entry(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY.replace("test_broken", "test_fine"))
    result = run(pytester, kf_dir)
    assert result.ret == 1
    result.assert_outcomes(failed=2)  # test_broken is not recorded; test_fine passed against its entry
    out = result.stdout.str()
    assert "[XPASS(strict)] known failure vllm-0.0.0-standin.toml#1" in out
    assert "unexpected pass on tiny-bf16-tp1: test_kf::test_fine is recorded as a known failure in vllm-0.0.0-standin.toml#1" in out


def test_an_unexpected_pass_can_be_relaxed(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY.replace("test_broken", "test_fine"))
    result = run(pytester, kf_dir, "--glm45-strict-known-failures", "off")
    result.assert_outcomes(failed=1, xpassed=1)
    assert "unexpected pass on tiny-bf16-tp1: test_kf::test_fine" in result.stdout.str()


INTERMITTENT = 'intermittent = "failed in 2 of 4 runs: it depends on how the streamed deltas fall"\n'


def test_an_intermittent_entry_that_does_not_show_is_a_pass_with_a_note(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY.replace("test_broken", "test_fine") + INTERMITTENT)
    result = run(pytester, kf_dir)
    result.assert_outcomes(failed=1, passed=1)  # test_broken is not recorded; test_fine passed under its entry
    out = result.stdout.str()
    assert "XPASS" not in out and "unexpected pass" not in out
    assert "intermittent known failure vllm-0.0.0-standin.toml#1 did not show on 1 check(s) this run" in out


def test_an_intermittent_entry_still_judges_the_failure_by_its_signature(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY + INTERMITTENT)
    assert run(pytester, kf_dir).ret == 0  # test_broken fails as the signature says: known
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY.replace("Internal server error", "something else") + INTERMITTENT)
    result = run(pytester, kf_dir)
    assert result.ret == 1
    assert "not as known failure vllm-0.0.0-standin.toml#1 says it does" in result.stdout.str()


@pytest.mark.parametrize("value", ["true", '""', "3"])
def test_intermittent_must_say_how_often_and_why(value: str) -> None:
    with pytest.raises(KnownFailuresError, match=r"intermittent = .*accepted: a sentence saying how often"):
        parse(ENTRY + f"intermittent = {value}\n", "vllm-9.toml")


def test_junit_xml_carries_the_check_ids_and_the_known_failure_reason(pytester: pytest.Pytester, standin, kf_dir: Path,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    import xml.etree.ElementTree as ET

    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY)
    junit = tmp_path / "junit.xml"
    result = run(pytester, kf_dir, f"--junitxml={junit}")
    assert result.ret == 0
    cases = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in ET.parse(junit).iter("testcase")}
    assert cases["test_broken[tiny-bf16-tp1]"] == {
        "glm45_check": "test_kf::test_broken", "glm45_config": "tiny-bf16-tp1", "glm45_verdict": "known failure",
        "glm45_known_failure": "known failure on vLLM 0.0.0-standin (vllm-0.0.0-standin.toml#1): vLLM gets it wrong"}  # fmt: skip
    assert cases["test_fine[tiny-bf16-tp1]"] == {"glm45_check": "test_kf::test_fine", "glm45_config": "tiny-bf16-tp1",
                                                 "glm45_verdict": "passed"}  # fmt: skip


SHOW_LONGREPR = """
def pytest_runtest_logreport(report):
    if report.when == "call" and not report.passed:
        print("LONGREPR-FIRST-LINE:", report.longreprtext.splitlines()[0])
"""


@pytest.mark.parametrize("known", [True, False], ids=["known", "new"])
def test_a_known_failure_keeps_the_traceback_python_prints(pytester: pytest.Pytester, standin, kf_dir: Path, known: bool) -> None:
    """A known failure's report carries the traceback as Python prints it (cheap: pytest's own parses every
    source file in it); a new failure keeps pytest's, with the failing source lines."""
    if known:
        (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY)
    pytester.makeconftest(SHOW_LONGREPR)
    result = run(pytester, kf_dir, "-s")
    result.assert_outcomes(passed=1, **({"xfailed": 1} if known else {"failed": 1}))
    first = next(line for line in result.stdout.lines if "LONGREPR-FIRST-LINE:" in line).split("LONGREPR-FIRST-LINE: ", 1)[1]
    if known:
        assert first == "Traceback (most recent call last):", first
    else:
        assert first.startswith("glm45_server = ServerHandle("), first  # pytest's long style: the arguments, then the source


# -- a known failure names its defect, not a symptom many defects share (issue 34) --------------------------------

#: Failure texts that many defects share: an engine that died, ran out of memory or failed anew answers so too.
GENERIC_FAILURES = (
    "Failed: HTTP 500: Internal server error\nscript: '<tool_call>get_weather\\n<arg_key>city</arg_key>'",
    "Failed: HTTP 500: EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.",
    "Failed: HTTP 500: mid-stream error event: {'error': {'message': 'CUDA out of memory', 'code': 500}}",
    "HttpError: POST /v1/responses answered HTTP 500: Internal server error",
    "the server broke off the stream: RemoteProtocolError: peer closed connection without sending complete message body",
    "httpx.ReadTimeout: timed out",
    "httpx.RemoteProtocolError: Server disconnected without sending a response.",
    "Failed: HTTP 503: Service Unavailable",
    "Failed: HTTP 502: Bad Gateway",
)


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.joinpath("pytest_glm45", "known_failures").glob("vllm-*.toml")),
                         ids=lambda p: p.name)  # fmt: skip
def test_no_shipped_entry_is_matched_by_a_symptom_many_defects_share(path: Path) -> None:
    """Every shipped entry names its defect: none of them takes a bare 5xx, a broken stream or a timeout (with or
    without an unrelated server-log line) for itself."""
    unrelated_log = "\nserver log: (EngineCore pid=1) ERROR [core.py:900] EngineCore encountered a fatal error."
    too_broad = [f"#{n} matches {text!r}" for n, entry in enumerate(parse(path.read_text("utf-8"), str(path)), 1)
                 for text in GENERIC_FAILURES for suffix in ("", unrelated_log)
                 if entry.signature.matches(text + suffix)]  # fmt: skip
    assert not too_broad, f"{path.name}: entries too broad to name a defect:\n" + "\n".join(too_broad)


def test_a_5xx_status_alone_is_refused() -> None:
    with pytest.raises(KnownFailuresError, match=r"status = 500 \}? alone names no defect.*accepted: add match"):
        parse('[[failure]]\ncheck = "t::x"\nreason = "r"\nsignature = { status = 500 }\nevidence = { got = "g" }\n')
    assert parse('[[failure]]\ncheck = "t::x"\nreason = "r"\nsignature = { status = 400 }\nevidence = { got = "g" }\n')


def test_entries_apply_to_a_checks_own_body_only(tmp_path: Path) -> None:
    """A setup or teardown error never becomes a known failure, however well its text matches."""
    (tmp_path / "vllm-1.2.3.toml").write_text(ENTRY)
    kf, v = load("1.2.3", tmp_path), Verdicts()
    for phase in ("setup", "teardown"):
        judged = v.judge("test_kf::test_broken", "tiny-bf16-tp1", phase, "failed", "HTTP 500: Internal server error", kf)
        assert (judged.outcome, judged.entry) == ("error", None), phase
    assert v.judge("test_kf::test_broken", "tiny-bf16-tp1", "call", "failed", "HTTP 500: Internal server error", kf).outcome == "known failure"


#: The shipped 0.32.0 entry for the strict grammar against GLM-4.5's native format, as a stand-in's file.
NATIVE_ENTRY = next(
    block for block in Path(__file__).parent.parent.joinpath("pytest_glm45", "known_failures", "vllm-0.32.0.toml")
    .read_text("utf-8").split("\n[[failure]]")[1:] if "test_tool_calling::test_replay[*-native-*]" in block
)  # fmt: skip

NATIVE_CHECK = """
import pytest
from pytest_glm45.clients.chat import HttpError

@pytest.mark.parametrize("case", ["one-call-native-plain"])
def test_replay(glm45_chat, case):
    try:
        glm45_chat.chat([{"role": "user", "content": "Weather?"}], max_tokens=8)
    except HttpError as exc:
        pytest.fail(f"HTTP {exc.status}: {exc.message}", pytrace=False)
"""


@pytest.mark.parametrize(("mode", "outcome"), [("grammar-500", "known"), ("chat-500=EngineDeadError: engine core died", "new"),
                                               ("chat-500=Internal server error", "new")])  # fmt: skip
def test_a_500_is_known_only_when_the_server_logged_the_recorded_cause(pytester: pytest.Pytester, standin, kf_dir: Path,
                                                                        mode: str, outcome: str) -> None:  # fmt: skip
    """The shipped entry for the strict grammar's HTTP 500 on GLM-4.5's native format applies when the server's log
    says the grammar rejected the request; the same 500 from a dead engine, or with nothing logged, is a new failure."""
    (kf_dir / "vllm-0.0.0-standin.toml").write_text("[[failure]]" + NATIVE_ENTRY)
    standin(mode)
    pytester.makepyfile(test_tool_calling=NATIVE_CHECK)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rxX", "--gpus", "0", "--glm45-parallel", "tp1",
                                           "--glm45-strict-tools", "on", "--glm45-known-failures", str(kf_dir))  # fmt: skip
    out = result.stdout.str()
    if outcome == "known":
        result.assert_outcomes(xfailed=1)
        assert "known failure on vLLM 0.0.0-standin (vllm-0.0.0-standin.toml#1)" in out
    else:
        result.assert_outcomes(failed=1)
        assert "new failure on tiny-bf16-tp1: test_tool_calling::test_replay[one-call-native-plain] fails, but not as known failure" in out


DIES = """
import pytest

def test_broken(glm45_chat):
    glm45_chat.chat([{"role": "user", "content": "Hi"}], max_tokens=8)
"""


def test_a_check_whose_server_died_during_it_is_never_a_known_failure(pytester: pytest.Pytester, standin, kf_dir: Path) -> None:
    (kf_dir / "vllm-0.0.0-standin.toml").write_text(ENTRY.replace('{ status = 500, match = "Internal server error" }',
                                                                  '{ match = "." }'))  # fmt: skip
    standin("die-after=0")
    pytester.makepyfile(test_kf=DIES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parallel", "tp1",
                                           "--glm45-strict-tools", "on", "--glm45-known-failures", str(kf_dir))  # fmt: skip
    result.assert_outcomes(failed=1)
    assert "exited during this check: its failure is not judged against the known failures" in result.stdout.str()


@pytest.mark.parametrize("with_log", [True, False], ids=["server-log", "no-log"])
def test_a_remote_servers_log_names_the_cause_of_its_500(pytester: pytest.Pytester, kf_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, with_log: bool) -> None:  # fmt: skip
    """Against --glm45-base-url the kit reads the server's log when given it (--glm45-server-log); without it, a
    500 cannot be told from another and is a new failure."""
    from standin import standin_spec

    from pytest_glm45.engine.server import ServerProcess

    (kf_dir / "vllm-0.0.0-standin.toml").write_text("[[failure]]" + NATIVE_ENTRY)
    log = tmp_path / "remote.log"
    with ServerProcess(standin_spec("grammar-500", served_name="remote-model"), log, startup_timeout=30) as remote:
        pytester.makepyfile(test_tool_calling=NATIVE_CHECK)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm45-base-url", remote.base_url,
                                               "--glm45-known-failures", str(kf_dir),
                                               *(["--glm45-server-log", str(log)] if with_log else []))  # fmt: skip
    if with_log:
        result.assert_outcomes(xfailed=1)
    else:
        result.assert_outcomes(failed=1)

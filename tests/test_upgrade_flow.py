"""The first upgrade to a vLLM version without known-failure files: layers of known-failure directories, the
drafted file (`pytest-glm45 evidence --draft`), and the stored reports judged again offline (`compare
--known-failures`), without vLLM and without a re-run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_glm45 import known_failures, report
from pytest_glm45.known_failures import KnownFailuresError, default_dir, directories, load, parse
from pytest_glm45.reports.draft import draft, signature_of, signature_toml
from pytest_glm45.reports.rejudge import rejudge

OLD_FILE = """
[pins]
max_tokens_over_window = "reject"

[[failure]]
checks = ["test_tool_calling::test_replay[unknown-name-*]"]
reason = "a call to an undeclared tool vanishes"
signature = { match = "neither a call nor the model's text" }
evidence = { got = "calls=[] content=None" }

[[failure]]
checks = ["test_tool_calling::test_tool_choice_guided[*]"]
configs = ["*-nostrict"]
reason = "tool_choice required is guided by a JSON grammar"
signature = { status = 500, match = "server log: .*grammar rejected tokens" }
evidence = { got = "HTTP 500" }

[[failure]]
checks = ["test_reasoning::test_replay[never-run-*]"]
reason = "a defect no check of this report exercises"
signature = { status = 500, match = "server log: .*out of blocks" }
evidence = { got = "HTTP 500" }
"""

NATIVE = "test_tool_calling::test_replay[one-call-native-{}]"
#: What a booted server's log says about a request the strict grammar refused (the observed text carries it).
GRAMMAR_LOG = ("\nserver log: (EngineCore_DP0 pid=7) ERROR 12-05 10:11:12 [core.py:42] Unexpected: grammar rejected tokens "
               "[198] for request chatcmpl-glm45-0123456789abcdef-1. Terminating request.")
UNKNOWN = "test_tool_calling::test_replay[unknown-name-plain]"
GUIDED = "test_tool_calling::test_tool_choice_guided[required-plain]"
PIN = "test_context_length::test_max_tokens_beyond_the_window_is_pinned"


def run_report(version: str, checks: list[tuple[str, str, str, str]]) -> dict:
    """A report.json of one run: (check, config, outcome, observed) per check."""
    data = report.new_report("0.1.0", "smoke", {})
    configs = sorted({c for _, c, _, _ in checks})
    data["configurations"] = {c: {"vllm_version": version, "engine": "cpu", "status": "ready"} for c in configs}
    data["checks"] = [{"id": i, "config": c, "outcome": o, "reason": obs, "observed": obs, "seconds": 0.1}
                      for i, c, o, obs in checks]  # fmt: skip
    data["benchmarks"] = []
    return data


def reports() -> tuple[dict, dict]:
    """0.31.0 passes the native format and fails the recorded undeclared-tool defect; 0.32.0 answers HTTP 500 to the
    native format, still has that defect, fixed the guided one, and caps max_tokens where 0.31.0 rejected it."""
    lax = "tiny-bf16-tp1-nostrict"
    old = run_report("0.31.0", [
        (NATIVE.format("plain"), "tiny-bf16-tp1", "passed", ""),
        (NATIVE.format("stream"), "tiny-bf16-tp1", "passed", ""),
        (UNKNOWN, "tiny-bf16-tp1", "failed", "neither a call nor the model's text came back: calls=[] content=None"),
        (GUIDED, lax, "failed", "HTTP 500: Internal Server Error" + GRAMMAR_LOG),
        (PIN, "tiny-bf16-tp1", "passed", ""),
    ])  # fmt: skip
    new = run_report("0.32.0", [
        (NATIVE.format("plain"), "tiny-bf16-tp1", "failed", "Failed: HTTP 500: Internal Server Error\nscript: '<tool_call>x'" + GRAMMAR_LOG),
        (NATIVE.format("stream"), "tiny-bf16-tp1", "failed", "Failed: HTTP 500: error event in the stream" + GRAMMAR_LOG),
        (UNKNOWN, "tiny-bf16-tp1", "failed", "neither a call nor the model's text came back: calls=[] content=None"),
        (GUIDED, lax, "passed", ""),
        (PIN, "tiny-bf16-tp1", "failed", "AssertionError: vLLM 0.32.0 now caps (pinned: reject)"),
    ])  # fmt: skip
    return old, new


def team_dir(tmp_path: Path) -> Path:
    team = tmp_path / "team-known-failures"
    team.mkdir()
    (team / "vllm-0.31.0.toml").write_text(OLD_FILE)
    return team


def test_directories_are_layers_and_shipped_names_the_kits_files(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    (team / "vllm-0.32.0.toml").write_text(
        '[pins]\nmax_tokens_over_window = "reject"\n\n[[failure]]\ncheck = "test_x::test_team"\nreason = "ours"\n'
        'signature = { status = 502, match = "bad gateway" }\nevidence = { got = "HTTP 502" }\n')  # fmt: skip
    assert directories(None) == (default_dir(),) and directories("shipped, " + str(team)) == (default_dir(), team)
    assert directories(["shipped", f"{team},shipped"]) == (default_dir(), team)  # repeated and comma lists, once each
    shipped = load("0.32.0")
    layered = load("0.32.0", ["shipped", str(team)])
    # The team's entry speaks first and is named with its directory; the shipped ones keep their names.
    assert layered.entries[0].source == "team/vllm-0.32.0.toml#1" and layered.entries[1:] == shipped.entries
    assert layered.pins["max_tokens_over_window"] == "reject" != shipped.pins["max_tokens_over_window"]
    assert layered.lookup("test_x::test_team", "tiny-bf16-tp1") is not None
    # Alone, the team's directory replaces the shipped files (as a single directory always did).
    assert [e.source for e in load("0.32.0", team).entries] == ["vllm-0.32.0.toml#1"]
    # replace = true drops what the layers under it said about that version.
    (team / "vllm-0.32.0.toml").write_text("replace = true\n" + (team / "vllm-0.32.0.toml").read_text())
    assert [e.source for e in load("0.32.0", ["shipped", team]).entries] == ["team/vllm-0.32.0.toml#1"]
    assert load("0.32.0", ["shipped", team]).pins == {"max_tokens_over_window": "reject"}


def test_a_draft_is_refused_until_reviewed(tmp_path: Path) -> None:
    (tmp_path / "vllm-9.9.9.toml").write_text("draft = true\n" + OLD_FILE)
    with pytest.raises(KnownFailuresError, match=r"is a draft \(draft = true\): review every entry"):
        load("9.9.9", tmp_path)


def test_the_plugin_option_takes_layers_and_refuses_a_missing_directory(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest("--glm45-known-failures", "shipped", "--glm45-known-failures", str(tmp_path / "nope"),
                                "--gpus", "0", "--co", "-p", "no:cacheprovider")  # fmt: skip
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--glm45-known-failures: '*nope' is not accepted; accepted: the path of a directory*shipped*"])


def test_draft_carries_what_still_fails_leaves_out_what_is_fixed_and_adds_the_new(tmp_path: Path) -> None:
    old, new = reports()
    text = draft(new, old, team_dir(tmp_path), source="new/report.json")
    assert text.splitlines()[0].startswith("# Known failures of vLLM 0.32.0: a DRAFT") and "\ndraft = true\n" in text
    assert 'max_tokens_over_window = "cap"  # vLLM 0.32.0 caps (observed on tiny-bf16-tp1; vLLM 0.31.0: reject)' in text
    assert "# Carried from vllm-0.31.0.toml#1: 1 failure(s) here match its signature" in text
    assert "# Left out: vllm-0.31.0.toml#2 (test_tool_calling::test_tool_choice_guided[*]): all 1 of its checks that ran pass" in text
    assert "# Carried from vllm-0.31.0.toml#3, not exercised by this report" in text
    assert "# New: test_tool_calling::test_replay, 2 failure(s)" in text and "2 passed on vLLM 0.31.0" in text
    drafted = parse(text.replace("draft = true\n", ""), "vllm-0.32.0.toml")
    native = next(e for e in drafted if NATIVE.format("plain") in e.checks)
    assert native.checks == (NATIVE.format("plain"), NATIVE.format("stream")) and native.configs == ("tiny-bf16-tp1",)
    assert native.signature.status == 500 and native.signature.match == "server log: .*Unexpected: grammar rejected tokens"
    assert native.reason.startswith("REVIEW: why vLLM 0.32.0 is wrong here.")
    assert native.evidence["observed"].startswith("Failed: HTTP 500")
    assert {e.reason for e in drafted} >= {"a call to an undeclared tool vanishes", "a defect no check of this report exercises"}
    assert not any("guided" in e.check for e in drafted)


def test_signature_of_a_failure_is_its_server_log_line_else_its_first_line_literally() -> None:
    sig = signature_of("parsed calls differ (a+b) [x]?\ngot: calls=[]")
    assert sig.status is None and sig.matches("parsed calls differ (a+b) [x]?\nmore") and not sig.matches("parsed calls differ")
    logged = signature_of("Failed: HTTP 500: Internal Server Error" + GRAMMAR_LOG)
    assert (logged.status, logged.match) == (500, "server log: .*Unexpected: grammar rejected tokens")
    other_request = GRAMMAR_LOG.replace("[198]", "[2039]").replace("0123456789abcdef", "fedcba9876543210")
    assert logged.matches("HTTP 500: mid-stream error event" + other_request) and not logged.matches("HTTP 500: engine died")
    parse(f"[[failure]]\ncheck = 'x'\nreason = 'r'\nsignature = {signature_toml(logged)}\nevidence = {{got = 'g'}}\n")


def test_stored_reports_are_judged_again_with_the_reviewed_file(tmp_path: Path) -> None:
    """Red with no file for 0.32.0 (new failures); the draft refused; reviewed, the same reports are known regressions
    that --accept-known passes. No server, no re-run."""
    old, new = reports()
    team = team_dir(tmp_path)
    for name, data in (("old.json", old), ("new.json", new)):
        (tmp_path / name).write_text(json.dumps(data))
    compare = [sys.executable, "-m", "pytest_glm45.cli", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
               "--known-failures", str(team)]  # fmt: skip
    red = subprocess.run([*compare, "--accept-known"], capture_output=True, text=True)
    assert red.returncode == 1 and "breaks 4 check(s) that pass on vLLM 0.31.0 (4 new, 0 recorded" in red.stdout, red.stdout

    drafted = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "evidence", str(tmp_path / "new.json"), "--draft",
                              "--since", str(tmp_path / "old.json"), "--known-failures", str(team),
                              "-o", str(team / "vllm-0.32.0.toml")], capture_output=True, text=True)  # fmt: skip
    assert drafted.returncode == 0 and "review every entry" in drafted.stderr, drafted.stderr
    refused = subprocess.run(compare, capture_output=True, text=True)
    assert refused.returncode != 0 and "is a draft" in refused.stderr
    again = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "evidence", str(tmp_path / "new.json"), "--draft",
                            "--since", "0.31.0", "--known-failures", str(team), "-o", str(team / "vllm-0.32.0.toml")],
                           capture_output=True, text=True)  # fmt: skip
    assert again.returncode != 0 and "exists; accepted: another --output, or --force" in again.stderr

    path = team / "vllm-0.32.0.toml"
    path.write_text(path.read_text().replace("draft = true\n", ""))  # the person's review
    known = subprocess.run(compare, capture_output=True, text=True)
    assert known.returncode == 1 and "(0 new, 2 recorded as known failures)" in known.stdout, known.stdout
    accepted = subprocess.run([*compare, "--accept-known"], capture_output=True, text=True)
    assert accepted.returncode == 0 and "✅ accepted" in accepted.stdout, accepted.stdout
    assert "tool_choice_guided[required-plain]` on tiny-bf16-tp1-nostrict: known failure → passed" in accepted.stdout


def test_rejudge_turns_passes_under_an_entry_into_unexpected_passes(tmp_path: Path) -> None:
    old, _ = reports()
    (tmp_path / "vllm-0.31.0.toml").write_text(OLD_FILE.replace("test_replay[unknown-name-*]", "test_replay[one-call-native-*]"))
    judged = rejudge(old, tmp_path)
    outcomes = {c["id"]: c["outcome"] for c in judged["checks"]}
    assert outcomes[NATIVE.format("plain")] == "unexpected pass" and outcomes[UNKNOWN] == "failed"
    assert outcomes[GUIDED] == "known failure" and judged["rejudged"]["changed"] == 3
    assert old["checks"][3]["outcome"] == "failed"  # the input is left alone
    assert known_failures.load("0.31.0", tmp_path).entries[1].source == "vllm-0.31.0.toml#2"

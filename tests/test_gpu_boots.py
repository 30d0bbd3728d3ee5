"""Servers and their GPU leases on a described 8-GPU host, with stand-in servers: a server's GPUs are freed
only once it has stopped, and no boot ahead takes GPUs that a configuration before it needs."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from standin import assert_all_gone, log_pids

from pytest_glm45.engine import gpulease
from pytest_glm45.engine import pool as pool_module
from pytest_glm45.engine.pool import ServerHandle, ServerPool
from pytest_glm45.engine.server import ServerProcess, process_group_members
from pytest_glm45.records.known_failures import KnownFailuresError
from pytest_glm45.settings import Settings, resolve_settings


def gpu_settings(tmp_path: Path, **values: str) -> Settings:
    from pytest_glm45.engine.inventory import read_inventory

    raw = {"model": "air-fp8", "gpus": "8", "parallel": "tp8", "strict_tools": "on", "log_dir": str(tmp_path / "logs"), **values}
    return resolve_settings(raw, detected_gpus=lambda: 8, cpu_cores=2, rootdir=tmp_path, inventory=read_inventory)


def test_a_failure_after_the_server_started_stops_it_before_its_gpus_are_freed(
    eight_gpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The known failures are read once the server is up (a boot can take 15 minutes): when that fails, the
    server is stopped, its whole process group gone, and only then are its GPUs free for the next boot."""
    settings = gpu_settings(tmp_path)
    (config,) = settings.matrix
    events: list[tuple[str, list[int]]] = []
    servers: list[ServerProcess] = []
    real_start, real_stop, real_release = ServerProcess.start, ServerProcess.stop, gpulease.GpuLease.release

    def start(self: ServerProcess) -> ServerProcess:
        servers.append(self)
        return real_start(self)

    def stop(self: ServerProcess) -> None:
        real_stop(self)
        events.append(("stopped", process_group_members(self.pgid or 0)))

    def release(self: gpulease.GpuLease) -> None:
        events.append(("GPUs freed", [p for s in servers for p in process_group_members(s.pgid or 0)]))
        real_release(self)

    def broken(*_args: object) -> None:
        raise KnownFailuresError("vllm-0.0.0-standin.toml: entry 1 lacks reason")

    monkeypatch.setattr(ServerProcess, "start", start)
    monkeypatch.setattr(ServerProcess, "stop", stop)
    monkeypatch.setattr(gpulease.GpuLease, "release", release)
    monkeypatch.setattr(pool_module.known_failures, "load", broken)
    pool = ServerPool(settings)
    try:
        with pytest.raises(KnownFailuresError):
            pool.acquire(config)
        assert [name for name, _ in events][:2] == ["stopped", "GPUs freed"], events
        assert events[0][1] == [] and events[1][1] == [], f"processes still running: {events}"
        assert_all_gone(log_pids(tmp_path / "logs"))
        again = gpulease.lease(8, range(8), "next boot", timeout=0)  # all eight are free again
        again.release()
    finally:
        for server in servers:
            real_stop(server)
        pool.stop_all()


def gpus_of(handle: ServerHandle) -> str:
    """The GPUs the server process got, from its own environment."""
    assert handle.server is not None and handle.server.process is not None
    environ = Path(f"/proc/{handle.server.process.pid}/environ").read_bytes().split(b"\0")
    return next(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"CUDA_VISIBLE_DEVICES="))


def test_a_boot_ahead_never_takes_the_gpus_of_the_configuration_before_it(eight_gpus: Path, tmp_path: Path) -> None:
    """--glm45-model air-fp8 --gpus 8: tp8 and tp8-nostrict each need all eight GPUs. The second, planned to boot
    beside the first, waits until the first holds its GPUs, finds none free and boots at its turn; before, it
    took the eight GPUs first and the first configuration waited for GPUs freed only after it had run."""
    settings = gpu_settings(tmp_path, strict_tools="on,off", startup_timeout="10")
    first, second = settings.matrix
    assert (first.id, second.id) == ("air-fp8-tp8", "air-fp8-tp8-nostrict")
    lines: list[str] = []
    pool = ServerPool(settings, reporter=SimpleNamespace(line=lines.append))
    try:
        pool.boot_ahead(second, first.id, at_start=True)
        time.sleep(1.0)  # a boot ahead that does not wait has taken the GPUs by now
        handle = pool.acquire(first)
        assert gpus_of(handle) == "0,1,2,3,4,5,6,7"
        assert pool._ahead[second.id].booted.wait(timeout=30)
        pool.flush_messages()
        assert "glm45: air-fp8-tp8-nostrict boots at its turn, not ahead of it: no 8 free GPUs now" in lines
        pool.release(handle)
        later = pool.acquire(second)
        assert gpus_of(later) == "0,1,2,3,4,5,6,7"
        pool.release(later)
    finally:
        pool.stop_all()
    assert_all_gone(log_pids(tmp_path / "logs"))
    booted = [line.split(" (log")[0] for line in lines if line.startswith("glm45: booting")]
    assert booted == ["glm45: booting air-fp8-tp8 on GPUs 0,1,2,3,4,5,6,7", "glm45: booting air-fp8-tp8-nostrict on GPUs 0,1,2,3,4,5,6,7"]


def test_boots_ahead_take_gpus_in_the_sessions_order_and_still_boot_ahead(eight_gpus: Path, tmp_path: Path) -> None:
    """Four tp2 configurations on eight GPUs: the three later ones boot ahead beside the first, each once
    those before it hold their GPUs, so the session's k-th configuration gets the k-th pair."""
    settings = gpu_settings(tmp_path, parallel="tp2,tp2-ep", strict_tools="on,off", startup_timeout="30")
    first, *rest = settings.matrix
    lines: list[str] = []
    pool = ServerPool(settings, reporter=SimpleNamespace(line=lines.append))
    try:
        for config in rest:
            pool.boot_ahead(config, first.id, at_start=True)
        handles = [pool.acquire(config) for config in settings.matrix]
        assert [gpus_of(h) for h in handles] == ["0,1", "2,3", "4,5", "6,7"]
        ahead = [line for line in lines if "ahead of its turn" in line]
        assert sorted(line.split()[2] for line in ahead) == sorted(c.id for c in rest), lines  # said in any order
        for handle in handles:
            pool.release(handle)
    finally:
        pool.stop_all()
    assert_all_gone(log_pids(tmp_path / "logs"))


def test_turns_let_a_boot_ahead_through_only_after_those_before_it() -> None:
    """gpulease.Turns on its own: wait answers at once once those before hold or are done; a configuration
    before it that boots at its turn makes it give up; a cancel ends a wait and not a boot let through."""
    import threading

    turns = gpulease.Turns()
    turns.holds("a")
    turns.done("b")
    assert turns.wait("c", ["a", "b"]) is None
    turns.cancel("c")  # let through already: no effect
    turns.gave_up("d")
    assert turns.wait("e", ["a", "d"]) == "d, which runs before it, boots at its turn and may need the same GPUs"
    answers: list[str | None] = []
    waiter = threading.Thread(target=lambda: answers.append(turns.wait("f", ["a", "g"])))
    waiter.start()
    turns.holds("g")
    waiter.join(timeout=10)
    assert answers == [None]
    waiter = threading.Thread(target=lambda: answers.append(turns.wait("h", ["never"])))
    waiter.start()
    turns.cancel("h")
    waiter.join(timeout=10)
    assert answers == [None, gpulease.Turns.CANCELLED]


def test_a_session_of_two_eight_gpu_configurations_runs_both(pytester: pytest.Pytester, eight_gpus: Path, tmp_path: Path) -> None:
    """End to end: the plugin plans the second configuration's boot beside the first; both run."""
    pytester.makepyfile(
        """
        from pathlib import Path

        def test_gpus(glm45_server):
            environ = Path(f"/proc/{glm45_server.server.process.pid}/environ").read_bytes().split(b"\\0")
            assert b"CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7" in environ

        def test_again(glm45_server):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--glm45-model", "air-fp8", "--gpus", "8",
                                           "--glm45-startup-timeout", "20", "--glm45-log-dir", str(tmp_path / "logs"))  # fmt: skip
    result.assert_outcomes(passed=4)
    assert "air-fp8-tp8-nostrict: ready in" in result.stdout.str()
    assert_all_gone(log_pids(tmp_path / "logs"))

"""A CPU server's engine processes run conformance traffic at ENGINE_NICE and throughput points at nice 0."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.engine.server import ENGINE_NICE, may_renice_back, process_group_members, renice_threads
from pytest_glm45.settings import resolve_settings

# A process group like a vLLM server's: a leader (the API server) with a child (the engine core).
GROUP = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"


@pytest.fixture
def group() -> Iterator[int]:
    leader = subprocess.Popen([sys.executable, "-c", GROUP], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while len(process_group_members(leader.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield leader.pid
    finally:
        os.killpg(leader.pid, 9)
        leader.wait()


def nice_of(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


@pytest.mark.skipif(not may_renice_back(), reason="this user may not lower a nice value again (the kit then leaves it alone)")
def test_the_engine_yields_during_conformance_and_not_during_a_throughput_point(group: int, tmp_path: Path) -> None:
    (config,) = resolve_settings({"model": "tiny", "parallel": "tp1", "strict_tools": "on", "gpus": "0"},
                                 detected_gpus=lambda: 0, cpu_cores=2, rootdir=tmp_path).matrix  # fmt: skip
    handle = ServerHandle(config, config.id, "http://127.0.0.1:1", None, "m", None, None, None, "cpu", "vllm-cpu", 8192,
                          True, None, server=SimpleNamespace(pgid=group))  # type: ignore[arg-type]  # fmt: skip
    child = next(pid for pid in process_group_members(group) if pid != group)
    handle.yield_engine()
    assert nice_of(child) == ENGINE_NICE and nice_of(group) == 0, "the API server keeps nice 0"
    with handle.measuring():
        assert nice_of(child) == 0
    assert nice_of(child) == ENGINE_NICE


def test_renice_threads_leaves_the_group_leader_alone(group: int) -> None:
    tids = renice_threads(group, 5)
    assert tids and group not in tids
    assert all(nice_of(t) == 5 for t in tids) and nice_of(group) == 0


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores: one lent to the boot, one more to give it")
def test_a_boot_waited_for_gets_every_core(group: int, tmp_path: Path) -> None:
    """While the session waits for a boot ahead (a throughput point, or the configuration's turn), nothing
    else runs: the boot's threads leave the core it borrowed for every core."""
    import threading

    from pytest_glm45.engine.pool import Ahead, ServerPool

    everywhere = set(os.sched_getaffinity(0))
    lent = min(everywhere)
    for pid in process_group_members(group):
        os.sched_setaffinity(pid, {lent})
    settings = resolve_settings({"model": "tiny", "parallel": "tp1", "strict_tools": "on", "gpus": "0"},
                                detected_gpus=lambda: 0, cpu_cores=2, rootdir=tmp_path)  # fmt: skip
    pool = ServerPool(settings)
    ahead = Ahead("tiny-bf16-tp1", (lent,))
    ahead.server = SimpleNamespace(pgid=group)  # type: ignore[assignment]
    pool._ahead["tiny-bf16-tp2"] = ahead

    def boot_ends_once_moved() -> None:  # or after 20 s, for the assert below to fail
        deadline = time.monotonic() + 20
        while any(os.sched_getaffinity(pid) != everywhere for pid in process_group_members(group)) and time.monotonic() < deadline:
            time.sleep(0.05)
        ahead.booted.set()

    threading.Thread(target=boot_ends_once_moved, daemon=True).start()
    pool.settle_boots()  # returns only once the boot has ended, i.e. once every process was moved
    assert all(os.sched_getaffinity(pid) == everywhere for pid in process_group_members(group))

"""Servers and their GPU leases on a described 8-GPU host, with stand-in servers: a server's GPUs are freed
only once it has stopped, and no boot ahead takes GPUs that a configuration before it needs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standin import assert_all_gone, log_pids

from pytest_glm45 import gpulease
from pytest_glm45 import pool as pool_module
from pytest_glm45.known_failures import KnownFailuresError
from pytest_glm45.pool import ServerPool
from pytest_glm45.server import ServerProcess, process_group_members
from pytest_glm45.settings import Settings, resolve_settings

H200 = {"name": "NVIDIA H200", "memory_bytes": 141 * 2**30, "compute_capability": [9, 0], "nvlink_links": 18}


@pytest.fixture
def eight_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin: Any) -> Path:
    """A described 8 x H200 host (GLM45_INVENTORY), stand-in servers, and this test's own GPU locks."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"gpus": [{**H200, "index": i} for i in range(8)], "driver_version": "570.0",
                                     "cuda_version": "12.8"}))  # fmt: skip
    monkeypatch.setenv("GLM45_INVENTORY", str(inventory))
    monkeypatch.setenv("GLM45_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return inventory


def gpu_settings(tmp_path: Path, **values: str) -> Settings:
    from pytest_glm45.inventory import read_inventory

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

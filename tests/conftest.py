"""Shared fixtures for the kit's own tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from standin import STANDIN

pytest_plugins = ["pytester"]


@pytest.fixture
def standin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Make the plugin boot the stand-in instead of vLLM; returns a setter for STANDIN_MODE."""
    monkeypatch.setenv("GLM45_SERVER_ENTRY", STANDIN)
    monkeypatch.setenv("GLM45_CACHE_DIR", str(tmp_path / "cache"))

    def set_mode(mode: str) -> None:
        monkeypatch.setenv("STANDIN_MODE", mode)

    set_mode("ok")
    return set_mode


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: an integration test that installs or boots real vLLM (minutes); "
                            "it runs by default, `-m 'not slow'` leaves it out")  # fmt: skip


H200 = {"name": "NVIDIA H200", "memory_bytes": 141 * 2**30, "compute_capability": [9, 0], "nvlink_links": 18}


@pytest.fixture
def eight_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standin: Any) -> Path:
    """A described 8 x H200 host (GLM45_INVENTORY), stand-in servers, and this test's own GPU lock directory."""
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps({"gpus": [{**H200, "index": i} for i in range(8)], "driver_version": "570.0",
                                     "cuda_version": "12.8"}))  # fmt: skip
    monkeypatch.setenv("GLM45_INVENTORY", str(inventory))
    monkeypatch.setenv("GLM45_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return inventory

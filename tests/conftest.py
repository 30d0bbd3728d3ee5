"""Shared fixtures for the kit's own tests."""

from __future__ import annotations

from pathlib import Path

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

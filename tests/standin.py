"""Helpers for driving the stand-in server and checking that nothing it started survives."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from pytest_glm45.engine.server import HOST, PORT, ServerSpec

STANDIN = str(Path(__file__).with_name("standin_server.py"))


def standin_spec(mode: str, served_name: str = "standin", config_id: str = "standin-tp1", **env: str) -> ServerSpec:
    """A ServerSpec that runs the stand-in (it reads --host, --port and --served-model-name as vLLM does)."""
    return ServerSpec(
        argv=(sys.executable, STANDIN, "--served-model-name", served_name, "--host", HOST, "--port", PORT),
        served_name=served_name,
        config_id=config_id,
        env=tuple({"STANDIN_MODE": mode, **env}.items()),
    )

def pids_in_log(text: str) -> list[int]:
    """Every pid a stand-in (and its child) printed into its log."""
    return [int(p) for p in re.findall(r"\bpid=(\d+)", text)]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def assert_all_gone(pids: list[int], within: float = 5.0) -> None:
    """Every pid has exited (zombies count as gone: only their parent can reap them)."""
    assert pids, "no pid to check: the stand-in did not log its pid"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes still running: {left}")


def log_pids(log_dir: Path) -> list[int]:
    pids: list[int] = []
    for log in sorted(log_dir.glob("*.log")):
        pids += pids_in_log(log.read_text(errors="replace"))
    return pids

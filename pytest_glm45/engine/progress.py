"""Progress of the session's boots: the reporter a pool writes to, clock readings, remembered boot times and
the estimate of a boot's time left."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # the run's settings sit above the engine: a type here, never a runtime import
    pass



class LineReporter(Protocol):
    """Where the pool says what it does (the plugin's terminal reporter; one with a
    `progress(text, final)` method also gets live lines while a server boots)."""

    def line(self, text: str) -> None:
        """Show one line."""


def clock(seconds: float) -> str:
    """Seconds as m:ss (h:mm:ss from an hour on)."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def boot_times_path(cache_dir: Path | None) -> Path:
    """The small JSON under the kit's cache dir that keeps each configuration's last boot, in seconds."""
    from pytest_glm45.engine.tinymodel import default_cache_dir

    return (cache_dir or default_cache_dir()) / "boot-seconds.json"


def previous_boot(cache_dir: Path | None, config_id: str) -> float | None:
    """How long this configuration's last successful boot took on this machine, if one was recorded."""
    try:
        value = json.loads(boot_times_path(cache_dir).read_text("utf-8")).get(config_id)
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def remember_boot(cache_dir: Path | None, config_id: str, seconds: float) -> None:
    """Record a boot's duration for the next session's estimate (best effort: a read-only cache is fine)."""
    path = boot_times_path(cache_dir)
    try:
        data = json.loads(path.read_text("utf-8")) if path.is_file() else {}
        data = data if isinstance(data, dict) else {}
        data[config_id] = round(seconds, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), "utf-8")
        tmp.replace(path)
    except (OSError, ValueError):
        pass


def estimate(elapsed: float, expected: float | None) -> str:
    """"~0:45 left" from a previous duration; past it, "longer than the last time (1:20)"; else "no estimate yet"."""
    if expected is None:
        return "no estimate yet"
    if elapsed <= expected:
        return f"~{clock(expected - elapsed)} left"
    return f"longer than the last time ({clock(expected)})"


@contextlib.contextmanager
def ticking(progress: Callable[[str, bool], None] | None, text: Callable[[float], str], every: float = 1.0) -> Iterator[None]:
    """While the body runs, `progress(text(elapsed), False)` every `every` seconds from a helper thread
    (the body blocks the main thread: a boot waits on the server); nothing when `progress` is None."""
    if progress is None:
        yield
        return
    started = time.monotonic()
    done = threading.Event()

    def tick() -> None:
        while not done.wait(every):
            progress(text(time.monotonic() - started), False)

    thread = threading.Thread(target=tick, name="glm45-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()



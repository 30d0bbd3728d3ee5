"""GPUs shared by servers that run side by side, and the host held alone for throughput.

Each GPU has a lock file; a server holds the locks of its GPUs (`flock`, so the kernel frees
them when the process dies: a crashed worker never leaves a GPU taken) from boot to stop. A
server asks for `n` GPUs and gets the first free aligned block of them (`{0,1}`, `{2,3}`, ... for
two), so four tp2 configurations run on `{0,1}`, `{2,3}`, `{4,5}`, `{6,7}` at once and a fifth
waits for the first block that frees. Throughput points take one host-wide lock (`alone`), so
they never overlap one another, whatever runs beside them.

The locks live in GLM45_LOCK_DIR, else `pytest-glm45-locks` in the system's temporary
directory: two kit runs on one host share them, and so never put two servers on one GPU.

Within one session, configurations take their GPUs in the session's order (`Turns`): a server booted
ahead of its turn takes GPUs only once every configuration before it holds its own or is done, so it
never holds the GPUs of one that runs before it (which would wait for GPUs freed only after it ran).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO


class GpuLeaseError(RuntimeError):
    """No block of free GPUs came within the wait."""


def lock_dir() -> Path:
    """Where the lock files live (GLM45_LOCK_DIR, else one directory per host under the temp dir)."""
    path = Path(os.environ.get("GLM45_LOCK_DIR") or Path(tempfile.gettempdir()) / "pytest-glm45-locks")
    path.mkdir(parents=True, exist_ok=True)
    return path


def blocks(gpu_ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """The aligned blocks of `n` GPUs among `gpu_ids`, in order: `(0, 1), (2, 3), ...` for two of eight."""
    if n < 1:
        raise ValueError(f"a server needs at least one GPU, not {n}")
    ids = list(gpu_ids)
    return [tuple(ids[i : i + n]) for i in range(0, len(ids) - n + 1, n)]


class GpuLease:
    """The GPUs one server holds; `release` (or the process's exit) frees them."""

    def __init__(self, ids: tuple[int, ...], files: list[IO[str]]) -> None:
        self.ids = ids
        self._files = files

    def release(self) -> None:
        """Free the GPUs."""
        for f in self._files:
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self._files = []


def _try_lock(path: Path, holder: str) -> IO[str] | None:
    f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the lease's life
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    _mark(f, holder)
    return f


def _mark(f: IO[str], holder: str) -> None:
    """Write who holds a lock into its file (for the messages of those who wait)."""
    f.seek(0)
    f.truncate()
    f.write(holder)
    f.flush()


def _holder(path: Path) -> str:
    try:
        return path.read_text("utf-8").strip() or "?"
    except OSError:
        return "?"


def lease(
    n: int,
    gpu_ids: Sequence[int],
    holder: str,
    *,
    timeout: float,
    directory: Path | None = None,
    poll: float = 0.5,
    on_wait: Callable[[str], None] | None = None,
) -> GpuLease:
    """Hold the first free aligned block of `n` of `gpu_ids` for `holder`, waiting up to `timeout` s."""
    candidates = blocks(gpu_ids, n)
    if not candidates:
        raise GpuLeaseError(f"{holder} needs {n} GPUs; this host offers {len(gpu_ids)} ({list(gpu_ids)})")
    directory = directory or lock_dir()
    label = f"{holder} (pid {os.getpid()})"
    deadline = time.monotonic() + timeout
    told = False
    while True:
        for block in candidates:
            files: list[IO[str]] = []
            for gpu in block:
                f = _try_lock(directory / f"gpu{gpu}.lock", label)
                if f is None:
                    break
                files.append(f)
            if len(files) == len(block):
                return GpuLease(block, files)
            GpuLease((), files).release()
        busy = ", ".join(f"GPU {g}: {_holder(directory / f'gpu{g}.lock')}" for g in gpu_ids)
        if time.monotonic() >= deadline:
            raise GpuLeaseError(f"{holder}: no {n} free GPUs within {timeout:.0f} s; held: {busy}")
        if on_wait is not None and not told:
            on_wait(f"glm45: {holder} waits for {n} free GPUs ({busy})")
            told = True
        time.sleep(poll)


@contextlib.contextmanager
def alone(what: str, directory: Path | None = None, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the host-wide throughput lock for `what`: no other throughput point runs meanwhile."""
    path = (directory or lock_dir()) / "throughput.lock"
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            if on_wait is not None:
                on_wait(f"glm45: {what} waits for the throughput point running beside it ({_holder(path)})")
            fcntl.flock(f, fcntl.LOCK_EX)
        _mark(f, f"{what} (pid {os.getpid()})")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class Turns:
    """The order in which one session's configurations take GPUs.

    The pool says what each configuration does: `holds` (it has its GPUs, or needs none), `done` (stopped,
    or failed: it needs none any more), `gave_up` (it did not boot ahead and boots at its turn, without GPUs
    until then). A boot ahead calls `wait` with the configurations before it and takes GPUs only when it
    returns None; `cancel` (its turn came, or a throughput point or the session's end) makes a boot ahead
    that still waits give up, and has no effect on one that was let through.
    """

    HOLDS, DONE, GAVE_UP = "holds", "done", "gave up"
    #: `wait`'s answer to a cancelled boot ahead
    CANCELLED = "it was called off before its turn to take GPUs"

    def __init__(self) -> None:
        self._state: dict[str, str] = {}
        self._let_through: set[str] = set()
        self._cancelled: set[str] = set()
        self._changed = threading.Condition()

    def _set(self, config_id: str, state: str) -> None:
        with self._changed:
            self._state[config_id] = state
            self._changed.notify_all()

    def holds(self, config_id: str) -> None:
        """`config_id` holds its GPUs (or needs none)."""
        self._set(config_id, self.HOLDS)

    def done(self, config_id: str) -> None:
        """`config_id` has stopped or failed: it holds no GPUs and will not take any."""
        self._set(config_id, self.DONE)

    def gave_up(self, config_id: str) -> None:
        """`config_id` boots at its turn: until then, the configurations after it must not take GPUs."""
        with self._changed:
            if self._state.get(config_id) is None:
                self._state[config_id] = self.GAVE_UP
            self._changed.notify_all()

    def cancel(self, config_id: str) -> None:
        """Call off a boot ahead of `config_id` that still waits for the configurations before it."""
        with self._changed:
            if config_id not in self._let_through:
                self._cancelled.add(config_id)
            self._changed.notify_all()

    def wait(self, config_id: str, before: Sequence[str]) -> str | None:
        """Wait until every configuration in `before` holds its GPUs or is done: None, take GPUs now.
        Else why not: one of them boots at its turn without GPUs (taking some now could take its), or
        the wait was cancelled."""
        with self._changed:
            while True:
                if config_id in self._cancelled:
                    return self.CANCELLED
                states = [(c, self._state.get(c)) for c in before]
                waiting = [c for c, state in states if state == self.GAVE_UP]
                if waiting:
                    return f"{waiting[0]}, which runs before it, boots at its turn and may need the same GPUs"
                if all(state in (self.HOLDS, self.DONE) for _, state in states):
                    self._let_through.add(config_id)
                    return None
                self._changed.wait(timeout=1.0)

"""What runs between the kit's fork of a server and the server's own program, as a program of its own.

`ServerProcess` starts `python -I -S spawn.py PARENT CPUS -- COMMAND...` in a new session (Popen's
`start_new_session`, done in C before exec). This script, single-threaded in a fresh interpreter where
ctypes is safe, asks the kernel for SIGTERM when the kit's thread that started it dies (PR_SET_PDEATHSIG,
kept across exec: a kit killed with SIGKILL takes its servers along), gives itself the CPU cores in CPUS
(a comma list; empty: no restriction), and execs COMMAND in its place: same pid, same process group,
same environment. Python documents `preexec_fn` as unsafe in a process with threads, and the kit boots
servers while its boot-ahead, batch and progress threads run; this replaces it.

Standard library only (it runs with -I -S: no site-packages, no PYTHONPATH).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
#: The exit code when COMMAND cannot be run (a shell's "command not found").
CANNOT_RUN = 127


def die_with_parent(parent: int) -> None:
    """SIGTERM to this process when its parent thread ends; exit at once if the parent is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl (not Linux): the kit's stop is then the only way out
        return
    if os.getppid() != parent:  # the kit died between the fork and the prctl: no signal will come
        sys.exit(f"pytest-glm45 spawn: the kit's process {parent} is gone; not starting the server")


def main(argv: list[str]) -> None:
    """`PARENT CPUS -- COMMAND...`: see the module's docstring."""
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(f"usage: spawn.py PARENT_PID CPUS -- COMMAND...; got {argv!r}")
    parent, cpus, command = int(argv[0]), argv[1], argv[3:]
    die_with_parent(parent)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"pytest-glm45 spawn: cannot run {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        sys.exit(CANNOT_RUN)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Where a run's CPU goes: every process's CPU seconds while a command runs, per server and process kind.

    python benchmarks/cpu_account.py -- .tox/suites/bin/pytest suites --glm45-report /tmp/run

Samples /proc every 2 s (utime + stime of every process on the host) while the command runs, then prints
the seconds of each vLLM server's processes (API server, engine core, workers) before and after it was
ready, the boot-refusal check's, pytest's and the rest. A server is named by the configuration that the
command's output says became ready on its port ("glm45: <config> ready in ... on http://127.0.0.1:<port>");
the command's output is passed through. Linux only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import defaultdict

HZ = os.sysconf("SC_CLK_TCK")
READY = re.compile(r"glm45: (\S+) ready in [\d.]+ s on http://127\.0\.0\.1:(\d+)")


class Process:
    def __init__(self, pid: str, ppid: int, comm: str, cmd: str, first: float) -> None:
        self.pid, self.ppid, self.comm, self.cmd, self.first = pid, ppid, comm, cmd, first
        self.samples: list[tuple[float, float]] = []


def sample(procs: dict[str, Process], t0: float) -> None:
    now = time.monotonic() - t0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / HZ
            proc = procs.get(pid)
            if proc is None:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:300]
                proc = procs[pid] = Process(pid, int(fields[1]), "", cmd, now)
            proc.comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            proc.samples.append((now, seconds))
        except (OSError, ValueError):
            pass


def server_of(procs: dict[str, Process], pid: str) -> Process | None:
    """The vLLM API server a process belongs to (itself, or an ancestor)."""
    for _ in range(10):
        proc = procs.get(pid)
        if proc is None:
            return None
        if "vllm.entrypoints" in proc.cmd:
            return proc
        pid = str(proc.ppid)
    return None


def main(argv: list[str]) -> int:
    command = argv[argv.index("--") + 1 :] if "--" in argv else argv
    if not command:
        print(__doc__)
        return 2
    procs: dict[str, Process] = {}
    t0 = time.monotonic()
    ready: dict[str, tuple[str, float]] = {}
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            sample(procs, t0)
            done.wait(2.0)

    threading.Thread(target=sampler, daemon=True).start()
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert run.stdout is not None
    for line in run.stdout:
        sys.stdout.write(line)
        match = READY.search(line)
        if match:
            ready[match.group(2)] = (match.group(1), time.monotonic() - t0)
    code = run.wait()
    done.set()
    sample(procs, t0)
    rows: dict[tuple[str, str, str], float] = defaultdict(float)
    for proc in procs.values():
        if not proc.samples:
            continue
        # A process seen at the first sample may have run before the command: count from that sample.
        start = proc.samples[0][1] if proc.first < 1.0 else 0.0
        total = proc.samples[-1][1] - start
        server = server_of(procs, proc.pid)
        if server is None:
            rows[("pytest" if "pytest" in proc.cmd else proc.comm, "", "")] += total
            continue
        port = re.search(r"--port[ =](\d+)", server.cmd)
        config, at = ready.get(port.group(1) if port else "", ("never ready (the boot-refusal check?)", float("inf")))
        booting = max((s for t, s in proc.samples if t <= at), default=start) - start
        kind = "APIServer" if proc is server else proc.comm.removeprefix("VLLM::")
        rows[(config, kind, "boot")] += booting
        rows[(config, kind, "serving")] += total - booting
    print(f"\nCPU seconds while the command ran ({time.monotonic() - t0:.0f} s, {os.cpu_count()} cores):")
    for (who, kind, phase), seconds in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
        if seconds >= 0.5:
            print(f"  {who:36} {kind:12} {phase:8} {seconds:7.1f}")
    print(f"  {'all':36} {'':12} {'':8} {sum(rows.values()):7.1f}")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

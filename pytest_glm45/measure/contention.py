"""Evidence of a noisy neighbour, per measured round: was anything else using the machine meanwhile?

A round of a throughput point is watched from its start to its end (`RoundWatch`). What is read:

- the CPU time (utime + stime, /proc/<pid>/stat) of every process outside the measured server's process
  tree and the kit's own (the roots given, and every descendant of them), over the round: a process that
  started during the round counts from zero;
- the kernel's steal time (/proc/stat, the `cpu` line's 8th figure): time the hypervisor gave this guest's
  virtual CPUs to someone else, which no process inside the guest can see;
- each CPU's frequency where the kernel exposes it (/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq):
  the lowest over the round's two readings, against the highest seen this session;
- on GPU hosts, through NVML (`pynvml` when importable, else nothing, said once): the processes on the GPUs
  that are neither the server's nor the kit's, and each GPU's utilisation at the round's end.

A round is *contended*, and set aside from the verdict, when (thresholds below, each justified where defined):
foreign processes took at least FOREIGN_CORE_SHARE of one core over the round; steal took at least
STEAL_CORE_SHARE of one core; a CPU ran FREQ_DROP or more below the fastest frequency seen; or another process
held a GPU. Each contended round says why, naming the biggest foreign processes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Contended when processes outside the server and the kit took this share of one core over the round. The
#: scheduler spreads a neighbour over the host's cores: on the 2-core layout (server on one core, client on the
#: other) one at 10% of a core takes about 5% of the server's core, half the 10% throughput tolerance, so such a
#: round cannot move a median by the tolerance; an idle host's daemons (one or two 10 ms ticks per round of the
#: sandbox's and the kernel's threads: kdamond, process_api, memfd, 2026-12-05) stay below it.
FOREIGN_CORE_SHARE = 0.10
#: Contended when the hypervisor stole this share of one core's time over the round: the same reasoning as
#: for a foreign process (stolen time is time the server did not run).
STEAL_CORE_SHARE = 0.10
#: Contended when a CPU ran this much slower than the fastest frequency seen this session (thermal or power
#: capping, a host's governor): 10% is the throughput tolerance itself.
FREQ_DROP = 0.10
#: Below this much foreign CPU (seconds) a round is never contended on that count: /proc counts in clock ticks
#: (10 ms at USER_HZ 100), so one or two ticks of a daemon in a short round are counting noise.
FOREIGN_FLOOR_S = 0.05

HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Snapshot:
    """What /proc and /sys said at one instant."""

    at: float
    #: pid -> (ppid, CPU seconds, command name)
    procs: Mapping[int, tuple[int, float, str]]
    #: the kernel's steal time summed over CPUs, seconds (None where /proc/stat is not readable)
    steal_s: float | None
    #: MHz per CPU whose frequency is readable
    freq_mhz: Sequence[float]
    #: GPU index -> utilisation %, and the pids running on the GPUs (NVML); empty without NVML
    gpu_util: Mapping[int, int] = field(default_factory=dict)
    gpu_pids: Mapping[int, int] = field(default_factory=dict)  # pid -> GPU index
    #: CPU time spent by the whole machine outside idle and iowait (/proc/stat), seconds; None where unreadable
    busy_s: float | None = None


@dataclass
class RoundContention:
    """One round's evidence and whether it is contended (then `why` says by what)."""

    seconds: float
    foreign_cpu_s: float
    steal_s: float | None
    min_freq_mhz: float | None
    #: the biggest foreign processes, "pid name 0.42 s"
    top_foreign: list[str] = field(default_factory=list)
    gpu_util: dict[int, int] = field(default_factory=dict)
    gpu_foreign: list[str] = field(default_factory=list)
    contended: bool = False
    why: str = ""
    #: every foreign process's CPU seconds over the round, by pid (not in the report: `top_foreign` is)
    foreign: dict[int, float] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The report's form (floats rounded)."""
        out = asdict(self)
        out.pop("foreign")
        for key in ("seconds", "foreign_cpu_s", "steal_s", "min_freq_mhz"):
            if out[key] is not None:
                out[key] = round(float(out[key]), 3)
        return out


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def read_procs(proc: str = "/proc") -> dict[int, tuple[int, float, str]]:
    """Every process's (ppid, CPU seconds, name); processes that vanish while read are left out."""
    out: dict[int, tuple[int, float, str]] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        stat = _read(f"{proc}/{name}/stat")
        if not stat or ")" not in stat:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        try:
            out[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ, stat[stat.index("(") + 1 : stat.rindex(")")])
        except (IndexError, ValueError):
            continue
    return out


def read_steal(proc: str = "/proc") -> float | None:
    """The kernel's steal time over all CPUs, in seconds; None where it is not readable."""
    return read_cpu_line(proc)[1]


def read_cpu_line(proc: str = "/proc") -> tuple[float | None, float | None]:
    """(busy, steal) seconds over all CPUs from /proc/stat's `cpu` line: busy is user, nice and system, the time
    processes ran (irq and softirq left out: the measured server's own loopback traffic is served there)."""
    text = _read(f"{proc}/stat")
    if not text:
        return None, None
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu" and len(parts) > 8:
            ticks = [int(x) for x in parts[1:9]]
            return (ticks[0] + ticks[1] + ticks[2]) / HZ, ticks[7] / HZ
    return None, None


def read_freqs(sys_cpu: str = "/sys/devices/system/cpu") -> list[float]:
    """The current frequency of each CPU that exposes one (MHz); empty on most virtual machines."""
    out = []
    for path in sorted(Path(sys_cpu).glob("cpu[0-9]*/cpufreq/scaling_cur_freq")):
        text = _read(str(path))
        if text and text.strip().isdigit():
            out.append(int(text) / 1000.0)
    return out


class Gpus:
    """NVML's view of the GPUs, when pynvml imports and NVML initialises; otherwise it reports nothing."""

    def __init__(self) -> None:
        self.note = ""
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # type: ignore[import-not-found, unused-ignore]

            pynvml.nvmlInit()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            self._nvml = pynvml
        except Exception as exc:  # no pynvml, no driver, no GPU: the round is watched without the GPUs
            self.note = f"GPUs not watched ({type(exc).__name__}: {exc})"[:160]

    def read(self) -> tuple[dict[int, int], dict[int, int]]:
        """(GPU index -> utilisation %, pid -> GPU index) now; empty without NVML."""
        util: dict[int, int] = {}
        pids: dict[int, int] = {}
        if self._nvml is None:
            return util, pids
        for i, handle in enumerate(self._handles):
            try:
                util[i] = int(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    pids[int(p.pid)] = i
            except Exception:  # a GPU that does not say (MIG, permissions): nothing from it
                continue
        return util, pids


def snapshot(gpus: Gpus | None = None, proc: str = "/proc") -> Snapshot:
    """Read everything once."""
    util, pids = gpus.read() if gpus is not None else ({}, {})
    busy, steal = read_cpu_line(proc)
    return Snapshot(time.monotonic(), read_procs(proc), steal, read_freqs(), util, pids, busy)


def listener_pids(base_url: str) -> list[int]:
    """The processes here that hold the listening socket of `base_url`'s port (a local server's); [] for a remote
    server or where /proc cannot tell."""
    from urllib.parse import urlsplit

    from pytest_glm45.engine.server import listening_inodes, socket_holders

    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0") or parts.port is None:
        return []
    inodes = listening_inodes(parts.port)
    if not inodes:
        return []
    return socket_holders((int(name) for name in os.listdir("/proc") if name.isdigit()), inodes)


def descendants(procs: Mapping[int, tuple[int, float, str]], roots: Iterable[int]) -> set[int]:
    """The roots and every process whose chain of parents reaches one of them."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [r for r in roots]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    return seen


def judge(before: Snapshot, after: Snapshot, own_roots: Iterable[int], peak_freq_mhz: float | None = None,
          foreign_core_share: float = FOREIGN_CORE_SHARE, own_alone: Iterable[int] = ()) -> RoundContention:  # fmt: skip
    """The round between two snapshots: foreign CPU, steal, frequency, foreign GPU processes, and the verdict.

    `own_roots` count with their descendants (the measured server's tree); `own_alone` without them (the kit's
    process, whose other children, such as a second server it booted, are neighbours of this round)."""
    seconds = max(after.at - before.at, 1e-6)
    roots = list(own_roots)
    own = descendants(after.procs, roots) | descendants(before.procs, roots) | set(own_alone)
    foreign: list[tuple[float, int, str]] = []
    for pid, (_, cpu, name) in after.procs.items():
        if pid in own:
            continue
        earlier = before.procs.get(pid)
        # a pid seen before counts from then (a kworker's name changes with its work); one whose CPU went down is
        # a reused pid: a new process, counted from zero
        used = cpu - earlier[1] if earlier is not None and cpu >= earlier[1] else cpu
        if used > 0:
            foreign.append((used, pid, name))
    foreign.sort(reverse=True)
    foreign_cpu = sum(u for u, _, _ in foreign)
    # Processes that started and ended within the round (a neighbour's test run spawning compilers) are in no
    # snapshot: the machine's busy time less what the live processes account for catches them.
    unattributed = 0.0
    if before.busy_s is not None and after.busy_s is not None:
        live = sum(max(cpu - (before.procs[pid][1] if pid in before.procs and cpu >= before.procs[pid][1] else 0.0), 0.0)
                   for pid, (_, cpu, _) in after.procs.items())  # fmt: skip
        unattributed = max((after.busy_s - before.busy_s) - live, 0.0)
        if unattributed >= max(foreign_core_share * seconds, FOREIGN_FLOOR_S):
            foreign.append((unattributed, 0, "(short-lived processes or the kernel)"))
            foreign.sort(reverse=True)
            foreign_cpu += unattributed
    steal = None if before.steal_s is None or after.steal_s is None else max(after.steal_s - before.steal_s, 0.0)
    freqs = [f for f in (*before.freq_mhz, *after.freq_mhz) if f > 0]
    min_freq = min(freqs) if freqs else None
    gpu_foreign = [f"pid {pid} on GPU {gpu}" for pid, gpu in sorted(after.gpu_pids.items()) if pid not in own]
    r = RoundContention(seconds, foreign_cpu, steal, min_freq, [f"{pid} {name} {u:.2f} s" for u, pid, name in foreign[:3]],
                        dict(after.gpu_util), gpu_foreign, foreign={pid: u for u, pid, _ in foreign})  # fmt: skip
    why = []
    if foreign_cpu >= max(foreign_core_share * seconds, FOREIGN_FLOOR_S):
        why.append(f"other processes took {foreign_cpu:.2f} s of CPU in {seconds:.2f} s ({foreign_cpu / seconds:.0%} of a core; "
                   f"limit {foreign_core_share:.0%}): {', '.join(r.top_foreign)}")  # fmt: skip
    if steal is not None and steal >= max(STEAL_CORE_SHARE * seconds, FOREIGN_FLOOR_S):
        why.append(f"the hypervisor stole {steal:.2f} s of CPU ({steal / seconds:.0%} of a core; limit {STEAL_CORE_SHARE:.0%})")
    if min_freq is not None and peak_freq_mhz and min_freq < (1 - FREQ_DROP) * peak_freq_mhz:
        why.append(f"a CPU ran at {min_freq:.0f} MHz, {1 - min_freq / peak_freq_mhz:.0%} below the {peak_freq_mhz:.0f} MHz seen")
    if gpu_foreign:
        why.append("other processes on the GPUs: " + ", ".join(gpu_foreign[:4]))
    r.contended, r.why = bool(why), "; ".join(why)
    return r


class RoundWatch:
    """Watches rounds for one measured server: `start()` before a round, `stop()` after it (a RoundContention).

    `own_roots` are the pids whose trees are the measurement itself (the server's, a proxy in front of it); the
    kit's own process counts too, but not its other children: another server the kit booted, idle or spinning,
    is a neighbour of this round. Everything else is a neighbour. `enabled` False reads nothing and never contends."""

    def __init__(self, own_roots: Sequence[int] = (), enabled: bool = True,
                 foreign_core_share: float = FOREIGN_CORE_SHARE) -> None:  # fmt: skip
        self.own_roots = list(own_roots)
        self.enabled = enabled
        self.foreign_core_share = foreign_core_share
        self.gpus = Gpus() if enabled else None
        self.peak_freq: float | None = None
        self._before: Snapshot | None = None

    def start(self) -> None:
        """Take the round's first reading."""
        if self.enabled:
            self._before = snapshot(self.gpus)

    def stop(self) -> RoundContention | None:
        """The round since `start()`; None when not watching."""
        if not self.enabled or self._before is None:
            return None
        after = snapshot(self.gpus)
        freqs = [*self._before.freq_mhz, *after.freq_mhz]
        if freqs:
            self.peak_freq = max([*freqs, self.peak_freq or 0.0])
        result = judge(self._before, after, self.own_roots, self.peak_freq, self.foreign_core_share, (os.getpid(),))
        self._before = None
        return result


def tree_cpu(roots: Sequence[int]) -> float:
    """CPU seconds used so far by the processes of these trees (live ones)."""
    procs = read_procs()
    return sum(procs[p][1] for p in descendants(procs, roots) if p in procs)


def wait_quiet(roots: Sequence[int], limit_s: float = 10.0, window_s: float = 0.2, share: float = FOREIGN_CORE_SHARE) -> float:
    """Wait until the trees of `roots` (a server just measured) use under `share` of a core over a `window_s`
    window, at most `limit_s`; the seconds waited. A CPU engine's threads keep spinning after its last answer:
    the next round, on the other server, would share the cores with them."""
    started = time.monotonic()
    if not roots:
        return 0.0
    while time.monotonic() - started < limit_s:
        before = tree_cpu(roots)
        time.sleep(window_s)
        if tree_cpu(roots) - before < share * window_s + 1e-9:
            break
    return time.monotonic() - started

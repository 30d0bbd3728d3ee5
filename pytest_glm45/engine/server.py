"""A server process: its start, its readiness, its stop. Any argv; the flags are the recipe's.

No pytest here, and no vLLM flag: `pytest_glm45.engine.recipe` writes the command line. A `ServerSpec`
holds that argv (with `{host}` and `{port}` where the address goes) and the environment it
adds; `ServerProcess` runs it in its own process group with its output in a log file, waits
under one deadline until it is alive, answers `/health` and lists the served model, and on
stop sends SIGTERM to the whole group, waits, then SIGKILLs whatever is left, engine core and
workers included.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm45.engine import rootcause
from pytest_glm45.engine.probes import http_get, listed_models, server_version
from pytest_glm45.records.redaction import known_secrets, redact


class ServerError(RuntimeError):
    """A server could not be started or stopped, or stopped serving."""


class ServerStartError(ServerError):
    """The server exited, or never became ready, during start."""


class ServerDiedError(ServerError):
    """The server was ready once and has exited since."""


class ServerStopError(ServerError):
    """Processes of the server outlived SIGKILL: what it held (its GPUs) is still in use."""


#: Placeholders in a ServerSpec's argv, filled in when the port is known.
HOST, PORT = "{host}", "{port}"


@dataclass(frozen=True)
class ServerSpec:
    """A server to run: its argv (`{host}` and `{port}` stand for the address) and its environment."""

    argv: tuple[str, ...]
    served_name: str
    config_id: str = "custom"
    env: tuple[tuple[str, str], ...] = ()
    #: CPU cores the process and its children may run on; empty: wherever the caller may
    cpus: tuple[int, ...] = ()

    def command(self, host: str, port: int) -> list[str]:
        """The exact command line, API key excluded (it travels in VLLM_API_KEY)."""
        return [host if a == HOST else str(port) if a == PORT else a for a in self.argv]

    def environment(self, api_key: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child's environment: the caller's, the spec's, and the API key."""
        env = dict(os.environ if base is None else base)
        env.update(dict(self.env))
        if api_key:
            env["VLLM_API_KEY"] = api_key
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def shell_line(self, host: str = "127.0.0.1", port: int = 8000) -> str:
        """The command as a person would type it, environment first; no secret in it."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        cmd = " ".join(shlex.quote(a) for a in self.command(host, port))
        pin = f"taskset -c {','.join(map(str, self.cpus))} " if self.cpus else ""
        return f"{env} {pin}{cmd}".strip()


def new_api_key() -> str:
    """A fresh key for one session's servers."""
    return "glm45-" + secrets.token_urlsafe(24)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the start retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def process_group_members(pgid: int) -> list[int]:
    """PIDs of live processes in process group `pgid` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # fields[0] is the state, fields[2] the process group
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            pids.append(int(entry))
    return pids


def listening_inodes(port: int) -> set[str]:
    """The socket inodes listening on TCP `port` on this host (Linux /proc/net/tcp and tcp6); empty elsewhere."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is the tenth column
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def socket_holders(pids: Iterable[int], inodes: set[str], first: bool = False) -> list[int]:
    """The processes among `pids` that hold one of the sockets `inodes` (/proc/<pid>/fd); with `first`, at most one."""
    wanted = {f"socket:[{i}]" for i in inodes}
    holders: list[int] = []
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    holders.append(pid)
                    break
            except OSError:
                continue
        if first and holders:
            break
    return holders


def group_holds_socket(pgid: int, inodes: set[str]) -> bool | None:
    """Whether a process of group `pgid` holds one of the sockets `inodes`; None when /proc cannot tell."""
    if not inodes or not os.path.isdir("/proc/self/fd"):
        return None
    return bool(socket_holders(process_group_members(pgid), inodes, first=True))


def group_threads(pgid: int, leader: bool = True) -> list[int]:
    """The thread ids of process group `pgid`'s live processes (without its leader's when `leader` is False)."""
    tids: list[int] = []
    for pid in process_group_members(pgid):
        if pid == pgid and not leader:
            continue
        with contextlib.suppress(OSError):
            tids += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    return tids


def move_threads(pgid: int, from_cpus: set[int], to_cpus: set[int]) -> list[int]:
    """Give every thread of process group `pgid` whose cores are exactly `from_cpus` the cores
    `to_cpus` instead; threads the server bound elsewhere itself (vLLM's OpenMP workers) keep theirs.
    The ids of the threads moved (Linux /proc)."""
    moved: list[int] = []
    for tid in group_threads(pgid):
        with contextlib.suppress(OSError):
            if os.sched_getaffinity(tid) == from_cpus:
                os.sched_setaffinity(tid, to_cpus)
                moved.append(tid)
    return moved


#: The nice value a CPU server's engine-core and worker processes run conformance traffic at. They
#: busy-wait on each other between steps (vLLM's shared-memory queues spin with sched_yield for a second
#: after each read): at nice 0 that spinning takes the cores the API server and the client need.
#: Measured on the 2-core machine, 314 replay checks against tiny-bf16-tp2: 44.3 / 46.1 s at nice 0,
#: 41.0 / 40.1 s at nice 10 (alternating). Throughput points run at nice 0 (ServerHandle.measuring).
ENGINE_NICE = 10


def may_renice_back() -> bool:
    """Whether this process may lower a nice value it raised (root, or RLIMIT_NICE allows nice 0): the
    kit raises one only when it can restore it for a throughput point."""
    import resource

    if os.geteuid() == 0:
        return True
    soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    return soft == resource.RLIM_INFINITY or soft >= 20


def renice_threads(pgid: int, nice: int) -> list[int]:
    """Give every thread of process group `pgid`'s processes but its leader (the API server, which
    serves the client) the nice value `nice`; the ids of the threads (Linux /proc)."""
    tids = group_threads(pgid, leader=False)
    set_nice(tids, nice)
    return tids


def set_nice(tids: list[int], nice: int) -> None:
    """Give these threads this nice value (threads that have ended are skipped)."""
    for tid in tids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, tid, nice)


def set_threads(tids: list[int], cpus: set[int]) -> None:
    """Give these threads these cores (threads that have ended are skipped)."""
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def spawn_argv(command: list[str], cpus: tuple[int, ...] = ()) -> list[str]:
    """The argv that runs `command` through `pytest_glm45.engine.spawn`: SIGTERM when the kit's thread that
    starts it dies (even by SIGKILL), and its CPU cores, set after exec in a process of its own (no code
    of the kit runs between fork and exec: Python documents preexec_fn as unsafe with threads)."""
    script = str(Path(__file__).with_name("spawn.py"))
    return [sys.executable, "-I", "-S", script, str(os.getpid()), ",".join(map(str, cpus)), "--", *command]


def tail(path: Path, lines: int = 40, secrets_: tuple[str, ...] = ()) -> str:
    """The last `lines` lines of a log file, secrets redacted."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return redact("\n".join(text.splitlines()[-lines:]), secrets_)


class ServerProcess:
    """One server process and everything it starts (vLLM's API server, its engine and workers).

    Use as a context manager, or call `start()` and `stop()`; `stop()` is idempotent and
    safe after any failure.
    """

    HOST = "127.0.0.1"
    PORT_ATTEMPTS = 3

    def __init__(
        self,
        spec: ServerSpec,
        log_path: Path,
        api_key: str | None = None,
        startup_timeout: float = 900.0,
        stop_timeout: float = 30.0,
        port: int | None = None,
    ) -> None:
        self.spec = spec
        self.log_path = log_path
        self.api_key = api_key
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.pgid: int | None = None
        #: the last start attempt found another process serving on its port (it retries on another)
        self._foreign_listener = False
        self.startup_seconds: float | None = None
        self.version: str | None = None
        self.max_model_len: int | None = None
        #: the log's size when the server became ready: a death's root cause is looked for after it
        self.ready_offset: int | None = None
        self._log: Any = None

    # -- properties ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """http://host:port of the server."""
        return f"http://{self.HOST}:{self.port}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must not appear in what the kit shows (the API key, tokens from the environment)."""
        return known_secrets((self.api_key,))

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the log, secrets redacted."""
        return tail(self.log_path, lines, self.secrets)

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        """The exit code, or None while running (or never started)."""
        return None if self.process is None else self.process.poll()

    # -- start ---------------------------------------------------------------------------

    def start(self) -> ServerProcess:
        """Start and wait until ready; on any failure, nothing is left running."""
        started = time.monotonic()
        deadline = started + self.startup_timeout
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(1, self.PORT_ATTEMPTS + 1):
                fixed_port = self.port is not None and attempt == 1
                if not fixed_port:
                    self.port = free_port(self.HOST)
                self._foreign_listener = False
                self._spawn(attempt)
                try:
                    self._wait_ready(deadline, started)
                    break
                except ServerStartError:
                    if attempt < self.PORT_ATTEMPTS and (self._port_was_taken() or self._foreign_listener):
                        self._kill_group()
                        self.port = None
                        continue
                    raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _spawn(self, attempt: int) -> None:
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab" if attempt > 1 else "wb")  # noqa: SIM115 - held for the server's life
        assert self.port is not None
        cmd = self.spec.command(self.HOST, self.port)
        header = f"# pytest-glm45: {self.spec.config_id} attempt {attempt}\n# {' '.join(cmd)}\n"
        self._log.write(redact(header, self.secrets).encode())
        self._log.flush()
        self.process = subprocess.Popen(
            spawn_argv(cmd, self.spec.cpus),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.spec.environment(self.api_key),
            start_new_session=True,  # its own process group, led by it: stop signals the whole group
            close_fds=True,
        )
        self.pgid = self.process.pid

    def _answered_by_another(self) -> bool:
        """Whether what answers on the port is another process's server: the free port the kit chose was taken
        between its choice and the server's bind (other kits, xdist workers or servers on the host), so a foreign
        server (its own API key: HTTP 401) answers the probes while ours has not bound yet."""
        if self.pgid is None or self.port is None:
            return False
        return group_holds_socket(self.pgid, listening_inodes(self.port)) is False

    def _port_was_taken(self) -> bool:
        text = tail(self.log_path, 80)
        return "address already in use" in text.lower() or "errno 98" in text.lower()

    def _wait_ready(self, deadline: float, started: float) -> None:
        stage = "waiting for the process"
        while True:
            code = self.exit_code
            if code is not None:
                raise ServerStartError(self._describe(f"exited with code {code} during start", started))
            if time.monotonic() > deadline:
                raise ServerStartError(
                    self._describe(f"was not ready after {self.startup_timeout:.0f} s ({stage})", started)
                    + "\nNext step: read the log; raise --glm45-startup-timeout if the model is only slow to load."
                )
            status, _ = http_get(self.base_url + "/health", timeout=2)
            if status and self._answered_by_another():
                self._foreign_listener = True
                raise ServerStartError(self._describe(f"found port {self.port} taken: another process's server answers "
                                                      "there (the port was free when the kit chose it)", started))  # fmt: skip
            if status == 200:
                stage = "waiting for /v1/models to list the served model"
                status, body = http_get(self.base_url + "/v1/models", self.api_key, timeout=5)
                if status == 200:
                    model = self._listed_model(body)
                    if model is not None:
                        self.max_model_len = model.get("max_model_len")
                        self.version = server_version(self.base_url)
                        with contextlib.suppress(OSError):
                            self.ready_offset = self.log_path.stat().st_size
                        return
                elif status in (401, 403):
                    raise ServerStartError(self._describe(f"refused the session's API key on /v1/models (HTTP {status})", started))
            elif status:
                stage = f"/health answered {status}"
            time.sleep(0.5)

    def _listed_model(self, body: bytes) -> dict[str, Any] | None:
        return next((m for m in listed_models(body) if m.get("id") == self.spec.served_name), None)

    def _describe(self, what: str, started: float) -> str:
        return (
            f"vLLM server for {self.spec.config_id} {what} (after {time.monotonic() - started:.1f} s, port {self.port})"
            f"{self.root_cause()}\n"
            f"Command: {redact(' '.join(self.spec.command(self.HOST, self.port or 0)), self.secrets)}\n"
            f"Log: {self.log_path}\n"
            f"Last lines of the log:\n{self.log_tail(30)}"
        )

    def root_cause(self, serving: bool = False) -> str:
        """`: <the root cause>` and, on a line of its own, where it stands in the log (`pytest_glm45.engine.rootcause`:
        the engine's first error; `serving`: its first traceback since the server became ready); "." when
        the log has none."""
        start = (self.ready_offset or 0) if serving else 0
        cause = rootcause.find(self.log_path, start, serving=serving, secrets=self.secrets)
        if cause is None:
            return "."
        since = " since the server became ready" if serving else ""
        return f": {cause.text}\nRoot cause: the {cause.kind} in the log{since} ({cause.describe()}); the log's last lines follow."

    # -- running -------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise ServerDiedError, with the exit code and the log tail, if the server has exited."""
        code = self.exit_code
        if self.process is not None and code is not None:
            raise ServerDiedError(
                f"vLLM server for {self.spec.config_id} has exited with code {code} while the suite ran "
                f"(port {self.port}){self.root_cause(serving=True)}\nLog: {self.log_path}\nLast lines of the log:\n{self.log_tail(30)}"
            )

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM to the whole group, wait up to stop_timeout, then SIGKILL what is left."""
        if self.pgid is not None:
            self._terminate_group()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _terminate_group(self) -> None:
        assert self.pgid is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            if self.process is not None:
                self.process.poll()  # reap the leader so it does not linger as a zombie
            if not process_group_members(self.pgid):
                break
            time.sleep(0.2)
        self._kill_group()

    def _kill_group(self) -> None:
        if self.pgid is None:
            return
        for _ in range(50):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
            if self.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.1)
            if not process_group_members(self.pgid):
                return
            time.sleep(0.1)
        left = process_group_members(self.pgid)
        if left:
            raise ServerStopError(f"processes {left} of {self.spec.config_id}'s server survived SIGKILL; "
                                  "its GPUs stay held by this session")  # fmt: skip

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

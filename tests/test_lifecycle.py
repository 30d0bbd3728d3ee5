"""The server lifecycle against the stand-in: start, readiness, failures, stop; nothing survives."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
from pathlib import Path

import pytest
from standin import assert_all_gone, pids_in_log, standin_spec

from pytest_glm45.engine.probes import http_get, http_post_json
from pytest_glm45.engine.server import (
    ServerDiedError,
    ServerProcess,
    ServerSpec,
    ServerStartError,
    process_group_members,
)


def spec(mode: str, **env: str) -> ServerSpec:
    return standin_spec(mode, **env)


def server(tmp_path: Path, mode: str, **kw: object) -> ServerProcess:
    env = kw.pop("env", {})
    return ServerProcess(spec(mode, **env), tmp_path / "server.log", api_key="glm45-test-key-123456", **kw)  # type: ignore[arg-type]


def log_text(tmp_path: Path) -> str:
    return (tmp_path / "server.log").read_text()


def test_ready_server_answers_and_stops_clean(tmp_path: Path) -> None:
    s = server(tmp_path, "ok", startup_timeout=30)
    with s:
        assert s.alive()
        assert s.version == "0.0.0-standin"
        assert s.max_model_len == 8192
        assert s.startup_seconds is not None and s.startup_seconds > 0
        assert http_get(s.base_url + "/v1/models", s.api_key)[0] == 200
        assert s.base_url.startswith("http://127.0.0.1:")
    assert_all_gone(pids_in_log(log_text(tmp_path)))
    assert process_group_members(s.pgid or 0) == []


def test_requests_without_the_session_key_are_refused(tmp_path: Path) -> None:
    with server(tmp_path, "ok", startup_timeout=30) as s:
        assert http_get(s.base_url + "/v1/models")[0] == 401
        assert http_get(s.base_url + "/v1/models", "wrong-key")[0] == 401


def test_crash_at_boot_fails_at_once_with_exit_code_and_log_tail(tmp_path: Path) -> None:
    s = server(tmp_path, "crash-at-boot", startup_timeout=60)
    with pytest.raises(ServerStartError) as err:
        s.start()
    text = str(err.value)
    assert "standin-tp1 exited with code 3 during start" in text
    assert "RuntimeError: standin crashed at boot" in text
    assert str(tmp_path / "server.log") in text
    assert "Command: " in text and "--served-model-name standin" in text
    assert_all_gone(pids_in_log(log_text(tmp_path)))


def test_hang_times_out_naming_the_stage_and_leaves_nothing(tmp_path: Path) -> None:
    s = server(tmp_path, "hang", startup_timeout=3)
    with pytest.raises(ServerStartError) as err:
        s.start()
    assert "was not ready after 3 s" in str(err.value)
    assert "--glm45-startup-timeout" in str(err.value)
    assert_all_gone(pids_in_log(log_text(tmp_path)))


def test_server_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    s = server(tmp_path, "ignore-sigterm", startup_timeout=30, stop_timeout=1)
    s.start()
    s.stop()
    assert_all_gone(pids_in_log(log_text(tmp_path)))


def test_children_in_the_group_are_stopped_too(tmp_path: Path) -> None:
    s = server(tmp_path, "spawn-child", startup_timeout=30, stop_timeout=1)
    s.start()
    pids = pids_in_log(log_text(tmp_path))
    assert len(pids) == 2, pids
    s.stop()
    assert_all_gone(pids)


def test_exit_mid_run_is_reported_with_code_and_log(tmp_path: Path) -> None:
    with server(tmp_path, "die-after=1", startup_timeout=30) as s:
        body = {"model": "standin", "messages": [{"role": "user", "content": "x"}]}
        assert http_post_json(s.base_url + "/v1/chat/completions", body, s.api_key)[0] == 200
        assert http_post_json(s.base_url + "/v1/chat/completions", body, s.api_key)[0] == 0
        s.process.wait(timeout=10)  # type: ignore[union-attr]
        with pytest.raises(ServerDiedError) as err:
            s.check_alive()
    assert "exited with code 7 while the suite ran" in str(err.value)
    assert "dying as asked" in str(err.value)


def test_port_taken_at_start_is_retried_on_another_port(tmp_path: Path) -> None:
    s = server(tmp_path, "port-taken", startup_timeout=30, env={"STANDIN_STATE": str(tmp_path / "state")})
    with s:
        assert s.alive()
    text = log_text(tmp_path)
    assert "attempt 1" in text and "attempt 2" in text
    assert_all_gone(pids_in_log(text))


def test_a_port_another_server_took_before_ours_bound_is_retried_on_another(tmp_path: Path) -> None:
    """The free port the kit chose is taken by another process's server before ours binds (another kit, an xdist
    worker): the foreign server answers the probes (HTTP 401 with its own key), which is not ours refusing the key."""
    from standin import standin_spec

    foreign = ServerProcess(standin_spec("ok", served_name="other"), tmp_path / "foreign.log", api_key="another-key-654321",
                            startup_timeout=30)  # fmt: skip
    with foreign:
        ours = server(tmp_path, "slow=2", startup_timeout=60, port=foreign.port)  # it binds after the foreign one answers
        with ours:
            assert ours.alive() and ours.port != foreign.port
        text = log_text(tmp_path)
        assert "attempt 1" in text and "attempt 2" in text
    assert_all_gone(pids_in_log(text))


def test_fixed_port_in_use_moves_to_a_free_one(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        # The stand-in cannot bind a taken port: it exits with "Address already in use".
        s = server(tmp_path, "ok", startup_timeout=30, port=taken)
        with s:
            assert s.port != taken


def test_api_key_never_reaches_the_log_or_command(tmp_path: Path) -> None:
    s = server(tmp_path, "ok", startup_timeout=30)
    with s:
        assert "glm45-test-key-123456" not in " ".join(s.spec.command("127.0.0.1", s.port or 0))
    assert "glm45-test-key-123456" not in log_text(tmp_path)
    assert "glm45-test-key-123456" not in s.log_tail()


def test_stop_is_idempotent_and_safe_before_start(tmp_path: Path) -> None:
    s = server(tmp_path, "ok")
    s.stop()
    s.start()
    s.stop()
    s.stop()
    assert not s.alive()


def test_kit_process_death_takes_the_server_along(tmp_path: Path) -> None:
    """A kit process killed with SIGKILL cannot clean up: the server's parent-death signal does."""
    import subprocess
    import sys
    import time

    code = (
        f"import sys; from pathlib import Path; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        f"from test_lifecycle import server; s = server(Path({str(tmp_path)!r}), 'ok', startup_timeout=30); s.start();"
        "print('READY', flush=True); import time; time.sleep(600)"
    )
    kit = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert kit.stdout is not None and kit.stdout.readline().strip() == "READY"
    pids = pids_in_log(log_text(tmp_path))
    kit.send_signal(signal.SIGKILL)
    kit.wait()
    time.sleep(0.5)
    assert_all_gone(pids, within=10)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to move threads between")
def test_move_threads_moves_the_borrowed_cores_and_leaves_bound_threads(tmp_path: Path) -> None:
    """A server booted ahead on a borrowed core moves to its own; a thread it pinned itself stays."""
    import subprocess
    import sys

    from pytest_glm45.engine.server import move_threads

    first, last = min(os.sched_getaffinity(0)), max(os.sched_getaffinity(0))
    script = (
        f"import os, threading, time\nos.sched_setaffinity(0, {{{last}}})\n"
        f"def bound():\n    os.sched_setaffinity(0, {{{first}}})\n    time.sleep(30)\n"
        "threading.Thread(target=bound, daemon=True).start()\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "print('ready', flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert sorted(len(os.sched_getaffinity(t)) for t in tids) == [1, 1, 1]
        moved = move_threads(proc.pid, {last}, {first, last})
        assert len(moved) == 2, "the main thread and the unbound thread move; the bound one keeps its core"
        masks = sorted(sorted(os.sched_getaffinity(t)) for t in tids)
        assert masks == sorted([[first], [first, last], [first, last]])
    finally:
        proc.kill()
        proc.wait()


def test_no_code_of_the_kit_runs_between_fork_and_exec() -> None:
    """Python documents preexec_fn as unsafe in a process with threads (the kit boots while its boot-ahead,
    batch and progress threads run): no Popen of the kit passes one."""
    import ast

    package = Path(__import__("pytest_glm45").__file__).parent
    calls = [
        f"{path.name}:{node.lineno}"
        for path in sorted(package.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.Call) and any(k.arg == "preexec_fn" for k in node.keywords)
    ]
    assert calls == [], f"preexec_fn passed at {calls}"


def test_a_server_starts_in_its_own_group_on_its_cores_without_preexec_fn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What preexec_fn did (setsid, the cores, the parent-death signal) is done by Popen's C code and the
    spawn wrapper; the server's pid, group and environment are its own once it has exec'd."""
    import subprocess

    from pytest_glm45.engine import server as server_module

    seen: list[dict[str, object]] = []
    real = subprocess.Popen

    def recording(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        seen.append(kwargs)
        return real(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(server_module.subprocess, "Popen", recording)
    core = max(os.sched_getaffinity(0))
    pinned = dataclasses.replace(spec("ok"), cpus=(core,))
    with ServerProcess(pinned, tmp_path / "server.log", api_key="glm45-test-key-123456", startup_timeout=30) as s:
        assert s.process is not None and s.pgid == s.process.pid == os.getpgid(s.process.pid)
        assert os.getsid(s.process.pid) == s.process.pid, "a session of its own, led by the server"
        assert os.sched_getaffinity(s.process.pid) == {core}
        cmdline = Path(f"/proc/{s.process.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1].endswith(b"standin_server.py"), "the wrapper has exec'd the server in its place"
    assert len(seen) == 1 and seen[0].get("preexec_fn") is None and seen[0].get("start_new_session") is True
    assert_all_gone(pids_in_log(log_text(tmp_path)))


def test_the_spawn_wrapper_does_not_start_a_server_for_a_dead_kit(tmp_path: Path) -> None:
    """Killed between its fork and the parent-death request, the kit would never send the signal: the
    wrapper sees its parent is not the kit's process and exits before the server starts."""
    import subprocess
    import sys

    from pytest_glm45.engine.server import spawn_argv

    argv = spawn_argv([sys.executable, "-c", "print('server started')"])
    argv[4] = "1"  # a parent that is not this process
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "server started" not in done.stdout
    assert "the kit's process 1 is gone" in done.stderr
    ok = subprocess.run(spawn_argv([sys.executable, "-c", "print('server started')"]), capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout == "server started\n"
    missing = subprocess.run(spawn_argv([str(tmp_path / "no-such-server")]), capture_output=True, text=True, timeout=30)
    assert missing.returncode == 127 and "cannot run" in missing.stderr

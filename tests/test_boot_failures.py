"""A server that fails names its root cause first, and flags that cannot boot with replay are refused before boot.

The recorded log (tests/fixtures/vllm-0.32-speculative-boot-failure.log) has vLLM 0.32's shape: a worker's
ValueError, the engine core's and multiprocessing's tracebacks of the consequence, and the API server's
generic "Engine core initialization failed. See root cause above." as its last line, 109 lines below the cause.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from standin import assert_all_gone, pids_in_log, standin_spec

from pytest_glm45.engine import rootcause
from pytest_glm45.engine.probes import http_post_json
from pytest_glm45.engine.recipe import speculative_flag
from pytest_glm45.engine.server import ServerDiedError, ServerProcess, ServerStartError
from pytest_glm45.settings import SettingsError, resolve_settings

RECORDED = Path(__file__).parent / "fixtures" / "vllm-0.32-speculative-boot-failure.log"
CAUSE = "ValueError: Custom logits processors are not supported when speculative decoding is enabled."
GENERIC = "RuntimeError: Engine core initialization failed. See root cause above."

#: A serving engine that logs terminated requests (ERROR lines, not why it dies), then a fatal error.
DEATH_LOG = """\
(EngineCore pid={pid}) ERROR 12-05 12:01:57 [backend_xgrammar.py:201] Failed to advance FSM for request chatcmpl-1 for tokens 198. Please file an issue.
(EngineCore pid={pid}) ERROR 12-05 12:01:57 [scheduler.py:2189] Unexpected: grammar rejected tokens [198] for request chatcmpl-1. Terminating request.
(APIServer pid={pid}) ERROR 12-05 12:01:57 [serving.py:203] Request chatcmpl-1 failed with an internal error during generation
(APIServer pid={pid}) ERROR 12-05 12:02:41 [api_router.py:75] Traceback (most recent call last):
(APIServer pid={pid}) ERROR 12-05 12:02:41 [api_router.py:75]   File "/v/vllm/sampling_params.py", line 597, in _verify_args
(APIServer pid={pid}) ERROR 12-05 12:02:41 [api_router.py:75]     raise VLLMValidationError(
(APIServer pid={pid}) ERROR 12-05 12:02:41 [api_router.py:75] vllm.exceptions.VLLMValidationError: temperature must be non-negative, got -1.0.
INFO:     127.0.0.1:43066 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512] EngineCore encountered a fatal error.
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512] Traceback (most recent call last):
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512]   File "/v/vllm/v1/engine/core.py", line 1490, in run_engine_core
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512]     engine_core.run_busy_loop()
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512] RuntimeError: CPU out of memory: tried to allocate 2.00 GiB for the KV cache
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512]
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512] The above exception was the direct cause of the following exception:
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512]
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512] Traceback (most recent call last):
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512]   File "/v/vllm/v1/engine/core.py", line 1514, in run_engine_core
(EngineCore pid={pid}) ERROR 12-05 12:03:10 [core.py:1512] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.
(APIServer pid={pid}) ERROR 12-05 12:03:10 [async_llm.py:693] AsyncLLM output_handler failed.
(APIServer pid={pid}) ERROR 12-05 12:03:10 [async_llm.py:693] Traceback (most recent call last):
(APIServer pid={pid}) ERROR 12-05 12:03:10 [async_llm.py:693]   File "/v/vllm/v1/engine/async_llm.py", line 650, in output_handler
(APIServer pid={pid}) ERROR 12-05 12:03:10 [async_llm.py:693] vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
(APIServer pid={pid}) INFO 12-05 12:03:11 [launcher.py:110] Shutting down FastAPI HTTP server.
"""


def test_the_recorded_boot_failure_has_the_workers_value_error_as_root_cause() -> None:
    text = RECORDED.read_text("utf-8").replace("{pid}", "4242")
    cause = rootcause.root_cause(text)
    assert cause is not None and (cause.text, cause.process, cause.kind) == (CAUSE, "Worker", "engine's first error")
    lines = text.splitlines()
    assert lines[cause.line - 1].endswith(CAUSE) and lines[-1].startswith(GENERIC)
    assert len(lines) - cause.line > 100, "the recorded cause stands far above the tail, as in vLLM's real log"


def test_a_boot_failure_names_the_root_cause_first_then_the_tail(tmp_path: Path) -> None:
    s = ServerProcess(standin_spec(f"log-and-exit={RECORDED}"), tmp_path / "server.log", startup_timeout=60)
    with pytest.raises(ServerStartError) as err:
        s.start()
    text = str(err.value)
    first, second = text.splitlines()[:2]
    assert "standin-tp1 exited with code 1 during start" in first and first.endswith(": " + CAUSE)
    log_line = 48  # the kit's two header lines and the stand-in's own line come first
    assert second == f"Root cause: the engine's first error in the log (line {log_line}, process Worker); the log's last lines follow."
    assert (tmp_path / "server.log").read_text().splitlines()[log_line - 1].endswith(CAUSE)
    tail = text.split("Last lines of the log:\n", 1)[1]
    assert GENERIC in tail and CAUSE not in tail, "the tail alone would not have named it"
    assert_all_gone(pids_in_log((tmp_path / "server.log").read_text()))


def test_a_server_dying_mid_run_names_the_engines_fatal_error_not_a_terminated_request(tmp_path: Path) -> None:
    (tmp_path / "death.log").write_text(DEATH_LOG)
    s = ServerProcess(standin_spec("die-after=1", STANDIN_DEATH_LOG=str(tmp_path / "death.log")), tmp_path / "server.log",
                      api_key="glm45-test-key-123456", startup_timeout=30)  # fmt: skip
    with s:
        body = {"model": "standin", "messages": [{"role": "user", "content": "x"}]}
        for _ in range(2):
            http_post_json(s.base_url + "/v1/chat/completions", body, s.api_key)
        s.process.wait(timeout=10)  # type: ignore[union-attr]
        with pytest.raises(ServerDiedError) as err:
            s.check_alive()
    first, second = str(err.value).splitlines()[:2]
    assert "exited with code 7 while the suite ran" in first
    assert first.endswith(": RuntimeError: CPU out of memory: tried to allocate 2.00 GiB for the KV cache")
    assert second.startswith("Root cause: the engine's first traceback in the log since the server became ready (line ")


def test_a_death_without_a_fatal_traceback_names_no_request_error() -> None:
    """An engine killed outright (the OOM killer) writes nothing: the request errors before are not named."""
    requests_only = DEATH_LOG.replace("{pid}", "9").split("(EngineCore pid=9) ERROR 12-05 12:03:10")[0]
    assert rootcause.root_cause(requests_only, serving=True) is None
    uncaught = requests_only + "Traceback (most recent call last):\n  File \"x.py\", line 1\nOSError: [Errno 24] Too many open files\n"
    cause = rootcause.root_cause(uncaught, serving=True)
    assert cause is not None and (cause.text, cause.kind) == ("OSError: [Errno 24] Too many open files", "first uncaught traceback")


def test_boot_errors_before_the_engine_starts_are_found_too() -> None:
    usage = "usage: api_server.py [-h] [--model MODEL]\napi_server.py: error: argument --dtype: invalid choice: 'bf17'\n"
    assert rootcause.root_cause(usage) == rootcause.RootCause("api_server.py: error: argument --dtype: invalid choice: 'bf17'", 2, None)
    api_only = "(APIServer pid=7) INFO 12-05 12:01:25 [a.py:1] starting\n(APIServer pid=7) ERROR 12-05 12:01:26 [a.py:2] no model at /x\n"
    cause = rootcause.root_cause(api_only)
    assert cause is not None and (cause.text, cause.line, cause.process) == ("no model at /x", 2, "APIServer")
    colored = "\x1b[0;36m(EngineCore pid=8)\x1b[0;0m \x1b[31mERROR\x1b[0m \x1b[90m12-05 12:01:26\x1b[0m \x1b[90m[core.py:9]\x1b[0m boom\n"
    assert rootcause.root_cause(colored) == rootcause.RootCause("boom", 1, "EngineCore", kind="engine's first error")
    assert rootcause.root_cause("(APIServer pid=7) WARNING 12-05 12:01:25 [a.py:1] careful\nall fine\n") is None


def test_a_failure_without_an_error_in_its_log_shows_the_tail_as_before(tmp_path: Path) -> None:
    s = ServerProcess(standin_spec("hang"), tmp_path / "server.log", startup_timeout=2)
    with pytest.raises(ServerStartError) as err:
        s.start()
    assert "Root cause" not in str(err.value) and str(err.value).splitlines()[0].endswith(").")


@pytest.mark.parametrize("args", [
    ['--speculative-config={"method": "ngram", "num_speculative_tokens": 3}'],
    ["--seed", "1", "--speculative-config", '{"method":"ngram"}'],
    ["--speculative_config", "{}"],
    ["-sc", "{}"],
    ["--speculative-config.method", "ngram"],
    ["--spec-method", "ngram"],
    ["--speculative-model", "[ngram]"],
    ["--num-speculative-tokens=5"],
])  # fmt: skip
def test_speculative_flags_are_refused_before_anything_boots(args: list[str]) -> None:
    with pytest.raises(SettingsError) as err:
        resolve_settings({"server_args": [" ".join(args)]}, detected_gpus=lambda: 0, cpu_cores=2, rootdir=Path("/r"))
    flag = speculative_flag(" ".join(args).split())  # each --glm45-server-arg splits on whitespace
    assert flag is not None and (err.value.option, err.value.value) == ("--glm45-server-arg", flag)
    assert "vLLM refuses custom logits processors when speculative decoding is enabled" in str(err.value)
    assert "Name speculative decoding as a configuration instead: --glm45-parallel tp1,tp1-ngram2" in str(err.value)


def test_other_server_args_are_not_speculative() -> None:
    assert speculative_flag(["--seed", "1", "--enforce-eager", "--max-num-seqs=8", "--spec", "ngram-x"]) is None


def test_a_speculative_server_arg_is_a_usage_error_and_nothing_boots(pytester: pytest.Pytester, standin: object,
                                                                       tmp_path: Path) -> None:  # fmt: skip
    pytester.makepyfile("def test_x(glm45_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gpus", "0", "--glm45-log-dir", str(tmp_path / "logs"),
                                           '--glm45-server-arg=--speculative-config {"method":"ngram"}')  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--glm45-server-arg: '--speculative-config' is not accepted; speculative decoding given as a server argument*"])
    assert not (tmp_path / "logs").exists(), "nothing may boot"

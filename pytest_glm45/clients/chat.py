"""A small chat client that keeps the server's JSON as it is, and the replay helper on top.

The suites need what the server really sent — field names, nulls, every chunk — so this
client posts JSON with httpx and returns dicts; it never retries (retries hide server errors).
"""

from __future__ import annotations

import contextlib
import functools
import json
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from pytest_glm45.clients.answers import ChatResult, assemble, from_response
from pytest_glm45.glm.replay import replay_extra_body, replayed_script
from pytest_glm45.records import reproducer
from pytest_glm45.records.error_events import error_event


class HttpError(Exception):
    """The server answered with a status other than 200."""

    def __init__(self, status: int, body: Any, path: str) -> None:
        self.status, self.body, self.path = status, body, path
        super().__init__(f"POST {path} answered HTTP {status}: {self.message}")

    @property
    def message(self) -> str:
        """The error message the server gave, wherever its body put it."""
        if isinstance(self.body, dict):
            err = self.body.get("error")
            if isinstance(err, dict):
                return str(err.get("message"))
            if "message" in self.body:
                return str(self.body["message"])
        return str(self.body)[:2000]


def request_id_header(exchange: reproducer.Exchange) -> dict[str, str]:
    """The header that sends `exchange` under its request id (the server's log lines about it carry the id)."""
    return {reproducer.REQUEST_ID_HEADER: exchange.request_id}


def curl_line(base_url: str, body: dict[str, Any], path: str = "/v1/chat/completions") -> str:
    """A command a person can paste to send a request by hand ($GLM45_API_KEY holds the key)."""
    payload = json.dumps(body, ensure_ascii=False).replace("'", "'\\''")
    return (
        f"curl -s {base_url}{path} -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $GLM45_API_KEY\" -d '{payload}'"
    )


#: The conformance clients send every request on a connection of its own (`Connection: close`; on
#: loopback a new one costs a fraction of a millisecond). A pooled connection races the server's keep-alive
#: (uvicorn closes an idle one after 5 s): a request sent as the server closes it fails with "Server
#: disconnected without sending a response" and nothing in the server's log. Idle connections dropped after
#: 2 s still lost one of a full run's ~5000 requests at 48 in flight (2026-11-29; likely a client thread,
#: starved of CPU, that read a response late), and a pool told to keep no idle connection
#: (max_keepalive_connections=0) closed one under another thread's read ("[Errno 9] Bad file descriptor").
#: Closed by the server after its response, a connection is never idle in the pool.
CLOSE = {"Connection": "close"}


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi's CAs), built once and shared by every client the kit makes.

    httpx builds a new one for each client unless given one, and loading the CA bundle was 64% of pytest's
    own CPU time in a run of 660 replay checks (one client per check, `glm45_chat`), measured with py-spy.
    """
    return httpx.create_ssl_context()


class ChatClient:
    """Posts to one OpenAI-compatible server; returns raw JSON or ChatResult."""

    def __init__(self, base_url: str, api_key: str | None, model: str, timeout: float = 120.0,
                 max_connections: int = 20) -> None:  # fmt: skip
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {**CLOSE, **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        # Thread-safe: the batched checks (pytest_glm45.clients.batch) share one client across threads.
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, limits=limits, verify=tls_context())

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw -----------------------------------------------------------------------------

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON and return the JSON answer; raise HttpError on a non-200."""
        resp = self._sent(path, body, None, lambda sent, headers: self._http.post(path, json=sent, headers=headers))
        data = _json(resp)
        if resp.status_code != 200:
            raise HttpError(resp.status_code, data, path)
        if not isinstance(data, dict):
            raise HttpError(resp.status_code, data, path)
        return data

    def send(self, path: str, body: Any, timeout: float | None = None) -> httpx.Response:
        """POST `body` as it is (bytes raw, anything else as JSON) and return the response, whatever its status."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if isinstance(body, bytes):
            raw = body.decode("utf-8", errors="surrogateescape")
            return self._sent(path, None, raw, lambda _sent, headers: self._http.post(
                path, content=body, headers={"Content-Type": "application/json", **headers}, **extra))
        return self._sent(path, body, None, lambda sent, headers: self._http.post(path, json=sent, headers=headers, **extra))

    def _sent(self, path: str, body: Any, raw: str | None,
              send: Callable[[Any, dict[str, str]], httpx.Response]) -> httpx.Response:  # fmt: skip
        """Send a non-streamed request under the kit's request id (`send(body, headers)`) and record it for the
        running check's reproducer."""
        exchange = reproducer.Exchange("POST", path, body, raw, stream=isinstance(body, dict) and body.get("stream") is True)
        exchange.body = body = reproducer.tagged(path, body, exchange.request_id)
        try:
            resp = send(body, request_id_header(exchange))
        except httpx.HTTPError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            reproducer.record(exchange)
            raise
        exchange.status = resp.status_code
        exchange.response = reproducer.truncated(resp.text)
        reproducer.record(exchange)
        return resp

    def post_stream(self, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST with stream=true and return every data chunk as a dict, until [DONE]."""
        return list(self.iter_stream(path, body))

    @contextlib.contextmanager
    def streaming(self, path: str, body: dict[str, Any], chunks: list[str]) -> Iterator[httpx.Response]:
        """POST `body` with stream=true under the kit's request id and give the 200 response to read; a non-200
        raises HttpError with the server's body. The stream is recorded for the running check's reproducer when it
        ends, however it ends, with the `chunks` the caller read (each as sent)."""
        exchange = reproducer.Exchange("POST", path, None, stream=True)
        exchange.body = sent = reproducer.tagged(path, {**body, "stream": True}, exchange.request_id)
        try:
            with self._http.stream("POST", path, json=sent, headers=request_id_header(exchange)) as resp:
                exchange.status = resp.status_code
                if resp.status_code != 200:
                    resp.read()
                    exchange.response = reproducer.truncated(resp.text)
                    raise HttpError(resp.status_code, _json(resp), path)
                yield resp
        except httpx.HTTPError as exc:
            exchange.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            exchange.chunks, exchange.chunks_total = reproducer.keep_chunks(chunks), len(chunks)
            reproducer.record(exchange)

    def iter_stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST with stream=true and yield each data chunk; an error event mid-stream raises HttpError."""
        chunks: list[str] = []
        with self.streaming(path, body, chunks) as resp:
            for line in sse_lines(resp):
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                chunks.append(payload)
                if payload == "[DONE]":
                    return
                chunk = json.loads(payload)
                failure = error_event(chunk)  # vLLM reports a failure that happens mid-stream as an error event
                if failure is not None:
                    raise HttpError(failure.status, chunk, path)
                yield chunk

    # -- chat ----------------------------------------------------------------------------

    def chat_body(self, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """The JSON body of a chat completion request (fields that are None are left out)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        body.update({k: v for k, v in fields.items() if v is not None})
        return body

    def chat(self, messages: list[dict[str, Any]], stream: bool = False, **fields: Any) -> ChatResult:
        """One chat completion, streamed or not, as a ChatResult."""
        body = self.chat_body(messages, **fields)
        if stream:
            body.setdefault("stream_options", {"include_usage": True})
            return assemble(self.post_stream("/v1/chat/completions", body))
        return from_response(self.post("/v1/chat/completions", body))

    def tokenize_chat(self, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        """What the server's template renders for these messages: token count and token strings."""
        body = self.chat_body(messages, return_token_strs=True, **fields)
        return self.post("/tokenize", body)

    def count_tokens(self, text: str) -> int:
        """How many tokens `text` is in the served tokenizer, without special tokens."""
        return int(self.post("/tokenize", {"model": self.model, "prompt": text, "add_special_tokens": False})["count"])


def sse_lines(resp: httpx.Response) -> Iterator[str]:
    """Server-sent-event lines, split on newlines only.

    httpx's iter_lines splits like str.splitlines, i.e. also on U+0085, U+2028 and friends,
    which JSON carries raw inside strings: a chunk holding one would be cut in two.
    """
    buffer = b""
    for data in resp.iter_bytes():
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r").decode("utf-8")
    if buffer:
        yield buffer.decode("utf-8")


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


DEFAULT_USER = [{"role": "user", "content": "Go ahead."}]


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class Replayer:
    """Sends a script through replay and returns the parsed result, streamed or not."""

    def __init__(self, client: ChatClient, max_tokens: int = 1024, opens_think: bool = False) -> None:
        self.client = client
        self.max_tokens = max_tokens
        #: The model's template opens the think block itself when thinking is on (GLM-4.7): a GLM-4.5 script is
        #: replayed as GLM-4.7 writes the same answer: its leading `<think>` is already in the prompt, and a script
        #: without a think block is an empty one (`</think>` first).
        self.opens_think = opens_think

    def chat(
        self,
        script: str,
        messages: list[dict[str, Any]] | None = None,
        stream: bool = False,
        **fields: Any,
    ) -> ChatResult:
        """Replay `script` as the assistant's output for `messages` (a one-line user turn by default)."""
        fields.setdefault("max_tokens", self.max_tokens)
        thinking = (fields.get("chat_template_kwargs") or {}).get("enable_thinking", True)
        script = replayed_script(script, self.opens_think, thinking)
        fields.update(replay_extra_body(script, {"vllm_xargs": fields.pop("vllm_xargs", None)}))
        return self.client.chat(messages or DEFAULT_USER, stream=stream, **fields)

    def both(self, script: str, messages: list[dict[str, Any]] | None = None, **fields: Any) -> tuple[ChatResult, ChatResult]:
        """The same replay, non-streamed then streamed."""
        return (
            self.chat(script, messages, stream=False, **fields),
            self.chat(script, messages, stream=True, **fields),
        )

"""Robustness: invalid requests get a 4xx with an error body, valid odd ones reach generation,
nothing gets a 5xx or a hang, and the server keeps serving; concurrent mixed traffic never
crosses wires; only the session's key opens the door.

Validity is the API contract's (OpenAI Chat Completions), case by case: each named invalid request
must be refused with a 4xx, each named valid one must come back 200 with generated tokens. The
generated batches mix those with random junk in every field and check what holds for any request:
no 5xx, no hang, an error body with every 4xx.

Every 5xx found is written as a request file a person can replay with curl
(`.glm45/robustness/<config>/*.json`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from pytest_glm45.clients.batch import Checks
from pytest_glm45.clients.chat import ChatClient, Replayer
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.glm.glm_format import render_call
from pytest_glm45.records.redaction import SECRET_ENV
from pytest_glm45.settings import Settings

DEADLINE_S = 30.0
#: The slowest decode a hostile request may meet, tokens/s: a valid request without max_tokens
#: (`"max_tokens": null` is one) generates to the window, which is not a hang, however long it takes.
SLOWEST_DECODE_TOK_S = 50.0
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
GOOD_MESSAGES = [{"role": "user", "content": "Hi"}]


def hostile_deadline(window: int | None) -> float:
    """How long a hostile request may take before it counts as a hang: DEADLINE_S plus a generation to
    the window at SLOWEST_DECODE_TOK_S (194 s for the tiny model's 8192 tokens)."""
    return DEADLINE_S + (window or 8192) / SLOWEST_DECODE_TOK_S


# -- what a hostile client sends --------------------------------------------------------

# JSON has no NaN or infinity: a body holding one cannot be sent at all (httpx refuses it; 4 of 5 hostile batches
# of a full-profile run, 5000 examples, were lost to it).
junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))  # fmt: skip
control_text = st.text(alphabet=st.characters(codec="utf-8", categories=("Cc", "Cf", "Zs", "Lo", "So")), max_size=30)
bad_messages = st.one_of(
    st.just([]),
    st.just([{"role": "user"}]),
    st.just([{"content": "no role"}]),
    st.builds(lambda r: [{"role": r, "content": "x"}], st.text(max_size=10).filter(lambda r: r not in ("user", "assistant", "system", "tool", "developer"))),
    st.just([{"role": "tool", "content": "orphan result"}]),
    st.just([{"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]),
    st.builds(lambda v: [{"role": "user", "content": v}], junk.filter(lambda v: not isinstance(v, str))),
    st.builds(lambda t: [{"role": "user", "content": [{"type": "mystery", "data": t}]}], st.text(max_size=5)),
)  # fmt: skip
bad_tools = st.one_of(
    st.just([{"type": "function"}]),
    st.just([{"type": "function", "function": {"parameters": {}}}]),
    st.just([{"type": "function", "function": {"name": "f", "parameters": {"type": "banana"}}}]),
    st.just([{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]),
    st.just([{"type": "nope", "function": {"name": "f"}}]),
    st.just("tools as a string"),
)
fields_to_break = st.sampled_from(
    ["max_tokens", "temperature", "top_p", "n", "logprobs", "top_logprobs", "stop", "seed", "presence_penalty",
     "tool_choice", "messages", "model", "stream", "response_format", "logit_bias"]
)  # fmt: skip


# -- named requests: what the contract says each must get ------------------------------------

F_TOOLS = [TOOL]
#: Requests the contract refuses: each must get a 4xx with an error body.
INVALID: dict[str, Any] = {
    "raw-truncated-json": b'{"messages": ',
    "raw-not-utf8": b"\xff\xfe",
    "raw-empty-body": b"",
    "raw-two-objects": b'{"a":1}{"b":2}',
    "raw-json-array": b"[]",
    "messages-empty": {"messages": []},
    "message-without-role": {"messages": [{"content": "no role"}]},
    "message-unknown-role": {"messages": [{"role": "wizard", "content": "x"}]},
    "message-content-a-number": {"messages": [{"role": "user", "content": 42}]},
    "message-unknown-content-part": {"messages": [{"role": "user", "content": [{"type": "mystery", "data": "x"}]}]},
    "tool-without-function": {"tools": [{"type": "function"}]},
    "tool-without-name": {"tools": [{"type": "function", "function": {"parameters": {}}}]},
    "tool-unknown-type": {"tools": [{"type": "nope", "function": {"name": "f"}}]},
    "tools-a-string": {"tools": "tools as a string"},
    "tool-parameters-a-string": {"tools": [{"type": "function", "function": {"name": "f", "parameters": "not a schema"}}]},
    "tool-choice-undeclared-tool": {"tools": F_TOOLS, "tool_choice": {"type": "function", "function": {"name": "absent"}}},
    "tool-choice-unknown-word": {"tools": F_TOOLS, "tool_choice": "sometimes"},
    "tool-choice-a-number": {"tools": F_TOOLS, "tool_choice": 7},
    "max-tokens-negative": {"max_tokens": -1},
    "n-zero": {"n": 0},
    "temperature-negative": {"temperature": -1.0},
    "top-logprobs-negative": {"logprobs": True, "top_logprobs": -1},
    "unknown-model": {"model": "no-such-model-7f3a"},
}
#: Valid requests, odd but meant to reach generation: each must come back 200 with generated tokens.
MUST_GENERATE: dict[str, Any] = {
    "control-characters": {"messages": [{"role": "user", "content": "\x01\x07\t\u200b\u2028 \x1b[31mred\x00 \ud7ff"}]},
    "hundred-tools": {"tools": [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object", "properties": {}}}}
                                for i in range(100)]},
    "n-3-with-required-tool": {"n": 3, "tools": F_TOOLS, "tool_choice": "required"},
}  # fmt: skip


def named_body(fields: Any) -> Any:
    """A named case's body: raw bytes as they are, else a small valid request with the case's fields over it."""
    return fields if isinstance(fields, bytes) else {"messages": GOOD_MESSAGES, "max_tokens": 4, **fields}


@st.composite
def hostile_request(draw: st.DrawFn) -> tuple[str, Any]:
    """(kind, body): one bad request, or a raw non-JSON body (kind 'raw')."""
    kind = draw(st.sampled_from(["field", "messages", "tools", "tool_choice", "numbers", "raw", "many-tools", "control", "n-tools",
                                 "named"]))  # fmt: skip
    if kind == "named":
        name = draw(st.sampled_from(sorted(INVALID) + sorted(MUST_GENERATE)))
        return f"named:{name}", named_body({**INVALID, **MUST_GENERATE}[name])
    body: dict[str, Any] = {"messages": GOOD_MESSAGES, "max_tokens": 4}
    if kind == "raw":
        return kind, draw(st.sampled_from([b"{", b"[]", b"null", b'{"messages": ', b"\xff\xfe", b"", b'{"a":1}{"b":2}']))
    if kind == "field":
        body[draw(fields_to_break)] = draw(junk)
    elif kind == "messages":
        body["messages"] = draw(bad_messages)
    elif kind == "tools":
        body["tools"] = draw(bad_tools)
    elif kind == "tool_choice":
        body["tools"] = [TOOL]
        body["tool_choice"] = draw(st.sampled_from([{"type": "function", "function": {"name": "absent"}}, "sometimes", {"type": "function"}, 7]))
    elif kind == "numbers":
        body[draw(st.sampled_from(["max_tokens", "top_logprobs", "n", "logprobs"]))] = draw(
            st.sampled_from([-1, 0, -(2**31), 2**31, 10**12, 10**30])
        )
        if "top_logprobs" in body:
            body["logprobs"] = True
    elif kind == "many-tools":
        n = draw(st.sampled_from([1000, 3000]))
        body["tools"] = [{"type": "function", "function": {"name": f"t{i}", "parameters": {"type": "object", "properties": {}}}} for i in range(n)]
    elif kind == "control":
        body["messages"] = [{"role": "user", "content": draw(control_text) + "\x00\x1b[31m\ud7ff"}]
    elif kind == "n-tools":
        body.update(n=draw(st.integers(2, 4)), tools=[TOOL], tool_choice="required")
    return kind, body


class Tally:
    """What was sent and how it was answered, per configuration; 5xx bodies kept for replay."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.sent = 0
        self.by_status: dict[int, int] = {}
        self.server_errors: list[Path] = []

    def record(self, kind: str, body: Any, status: int, answer: str) -> None:
        self.sent += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1
        if status >= 500:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            path = self.out_dir / f"5xx-{len(self.server_errors) + 1:03d}-{kind}.json"
            raw = body.decode("latin-1") if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
            path.write_text(raw, "utf-8")
            (path.with_suffix(".answer.txt")).write_text(f"HTTP {status}\n{answer}\n", "utf-8")
            self.server_errors.append(path)


@pytest.fixture(scope="session")
def tallies() -> dict[str, Tally]:
    """One tally per configuration, kept for the session."""
    return {}


@pytest.fixture
def tally(glm45_server: ServerHandle, request: pytest.FixtureRequest, tallies: dict[str, Tally]) -> Tally:
    out = Path(str(request.config.rootpath)) / ".glm45" / "robustness" / glm45_server.config_id
    return tallies.setdefault(glm45_server.config_id, Tally(out))


def send(chat: ChatClient, body: Any, timeout: float = DEADLINE_S) -> httpx.Response:
    """POST a body as it is (raw bytes too), the served model filled in when a JSON body names none."""
    if not isinstance(body, bytes) and "model" not in body:
        body = {"model": chat.model, **body}
    return chat.send("/v1/chat/completions", body, timeout=timeout)


def per_batch(settings: Settings, glm45_examples: Callable[[int], int]) -> int:
    """Hostile requests in each of the five batches: a fifth of the profile's count, shared out by glm45_examples."""
    return glm45_examples(max(1, settings.profile.robustness_requests // 5))


_DRAWN: dict[tuple[int, int], list[tuple[str, Any]]] = {}


def carries_tools(body: Any) -> bool:
    """Whether a request names tools or a tool choice: the only ones a server's tool-calling strictness
    can treat differently (it is a grammar for calls)."""
    return isinstance(body, dict) and ("tools" in body or "tool_choice" in body)


#: The hostile batches; the last one also carries every batch's requests that may run long (below).
BATCHES = 5


def may_run_long(body: Any) -> bool:
    """A valid request without max_tokens (`"max_tokens": null`) generates until the model stops or the
    window is full: the tiny model's random weights stop it after 150 to 1100 tokens (20 s or more on tp2)."""
    return isinstance(body, dict) and "max_tokens" in body and body["max_tokens"] is None


def hostile_batches(count: int) -> list[list[tuple[str, Any]]]:
    """The batches as sent: each batch's draw, with the requests that may run long moved to the last batch,
    whose check runs after its configuration's other checks (`glm45_long_answer`): they go out first with
    the rest, run beside the configuration's next checks, and nobody waits for them alone."""
    drawn = [hostile_batch(batch, count) for batch in range(BATCHES)]
    batches = [[(kind, body) for kind, body in requests if not may_run_long(body)] for requests in drawn]
    batches[-1] += [(kind, body) for requests in drawn for kind, body in requests if may_run_long(body)]
    return batches


def hostile_sent(server: ServerHandle, settings: Settings, batch: int, count: int) -> list[tuple[str, Any]]:
    """What a server is sent of a batch: all of it, or on a lax twin (strict tool calling off) whose strict
    twin runs in this session too, the requests that carry tools: the strict twin is sent the others, which
    strictness cannot change (as `glm45_no_tools` checks run on strict twins only)."""
    drawn = hostile_batches(count)[batch]
    config = server.config
    strict_twin = config is not None and not config.strict_tools and any(
        c.model == config.model and c.plan == config.plan and c.strict_tools for c in settings.matrix)  # fmt: skip
    return [(kind, body) for kind, body in drawn if carries_tools(body)] if strict_twin else drawn


def hostile_batch(batch: int, count: int) -> list[tuple[str, Any]]:
    """The batch's generated requests: a fixed, distinct seed per batch (reproducible, and the batches differ)."""
    if (batch, count) not in _DRAWN:
        drawn: list[tuple[str, Any]] = []

        @seed(4500 + batch)
        @settings(max_examples=count, database=None)
        @given(hostile_request())
        def draw(request: tuple[str, Any]) -> None:
            drawn.append(request)

        draw()
        _DRAWN[batch, count] = drawn
    return _DRAWN[batch, count]


@pytest.mark.parametrize("batch", [*range(BATCHES - 1), pytest.param(BATCHES - 1, marks=pytest.mark.glm45_long_answer)])
def test_hostile_requests_get_4xx_and_the_server_keeps_serving(
    glm45_server: ServerHandle, glm45_batch: Checks, glm45_chat: ChatClient, tally: Tally, batch: int,
    glm45_settings: Settings, glm45_examples: Callable[[int], int],
) -> None:  # fmt: skip
    """Five batches of generated bad requests (the profile's count in all, a share of it on a model's
    other parallel plans: see glm45_examples; on a lax twin beside its strict one, those that carry
    tools: hostile_sent);
    after each, a normal request works. The five batches'
    requests go out together (--glm45-concurrency in flight), those that may generate to the window
    (`max_tokens: null`) first, so a request that runs long overlaps the others; each batch judges its
    own answers."""
    count = per_batch(glm45_settings, glm45_examples)
    deadline = hostile_deadline(glm45_server.max_model_len)

    def timed(client: ChatClient, body: Any) -> tuple[float, httpx.Response]:
        started = time.monotonic()
        resp = send(client, body, deadline)
        return time.monotonic() - started, resp

    sent = [hostile_sent(glm45_server, glm45_settings, b, count) for b in range(BATCHES)]

    def requests(replay: Replayer, params: Mapping[str, Any]) -> list[Callable[[], tuple[float, httpx.Response]]]:
        return [(lambda b=body: timed(replay.client, b)) for _kind, body in sent[params["batch"]]]

    def long(params: Mapping[str, Any], i: int) -> bool:
        return may_run_long(sent[params["batch"]][i][1])

    drawn = sent[batch]
    failures: list[str] = []
    for (kind, body), outcome in zip(drawn, glm45_batch.each(requests, long), strict=True):
        if isinstance(outcome.error, httpx.TimeoutException):
            tally.record(kind, body, 599, "no answer within the deadline")
            failures.append(f"{kind}: no answer within {deadline:.0f} s")
            continue
        elapsed, resp = outcome.get()
        status = resp.status_code
        tally.record(kind, body, status, resp.text[:2000])
        if status >= 500:
            failures.append(f"{kind}: HTTP {status} after {elapsed:.1f} s: {resp.text[:200]}")
        elif status >= 400 and not _error_body(resp):
            failures.append(f"{kind}: HTTP {status} without an error body: {resp.text[:200]}")
    # The server must still answer a normal request after the batch.
    assert glm45_chat.chat(GOOD_MESSAGES, max_tokens=2).finish_reason in ("stop", "length")
    assert not failures, (
        f"{len(failures)} of {count} hostile requests broke the contract (request files in {tally.out_dir}):\n  "
        + "\n  ".join(failures[:20])
    )


@pytest.mark.glm45_long_answer  # after the last hostile batch, which runs after the configuration's other checks
def test_robustness_tally(glm45_server: ServerHandle, tally: Tally, record_property: Any, glm45_settings: Settings,
                          glm45_examples: Callable[[int], int]) -> None:  # fmt: skip
    """The count of what was tried, per configuration (runs after the batches)."""
    record_property("hostile_requests", tally.sent)
    record_property("by_status", json.dumps(tally.by_status, sort_keys=True))
    count = per_batch(glm45_settings, glm45_examples)
    planned = sum(len(hostile_sent(glm45_server, glm45_settings, batch, count)) for batch in range(BATCHES))
    assert tally.sent >= planned * 0.9, f"only {tally.sent} of {planned} planned hostile requests were sent"
    print(f"\n{glm45_server.config_id}: {tally.sent} hostile requests, answers by status {tally.by_status}, "
          f"{len(tally.server_errors)} 5xx")  # fmt: skip


# -- named requests ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_request_is_refused(glm45_chat: ChatClient, case: str) -> None:
    """The contract refuses it: a 4xx with an error body, and the server keeps serving."""
    body = named_body(INVALID[case])
    resp = send(glm45_chat, body)
    assert 400 <= resp.status_code < 500, f"{case}: an invalid request got HTTP {resp.status_code}, not a 4xx: {resp.text[:300]}"
    assert _error_body(resp), f"{case}: HTTP {resp.status_code} without an error body: {resp.text[:300]}"
    assert glm45_chat.chat(GOOD_MESSAGES, max_tokens=2).finish_reason in ("stop", "length")


@pytest.mark.parametrize("case", sorted(MUST_GENERATE))
def test_valid_odd_request_reaches_generation(glm45_chat: ChatClient, case: str) -> None:
    """Valid, if odd: HTTP 200 and generated tokens for every choice asked for."""
    body = named_body(MUST_GENERATE[case])
    resp = send(glm45_chat, body)
    assert resp.status_code == 200, f"{case}: a valid request got HTTP {resp.status_code}: {resp.text[:300]}"
    answer = resp.json()
    assert len(answer["choices"]) == body.get("n", 1), f"{case}: {len(answer['choices'])} choices for n={body.get('n', 1)}"
    assert answer["usage"]["completion_tokens"] >= len(answer["choices"]), f"{case}: nothing generated: {answer['usage']}"


def _error_body(resp: httpx.Response) -> bool:
    try:
        data = resp.json()
    except ValueError:
        return False
    return isinstance(data, dict) and ("error" in data or "message" in data or "detail" in data)


# -- concurrency ---------------------------------------------------------------------------


def test_64_concurrent_mixed_requests_never_cross(glm45_server: ServerHandle, glm45_replay: Replayer, weather_tool: dict[str, Any]) -> None:
    weather = weather_tool

    def one(i: int) -> tuple[int, bool, str]:
        kind = ("tool", "reasoning", "replay", "plain")[i % 4]
        stream = i % 3 == 0
        with ChatClient(glm45_server.base_url, glm45_server.api_key, glm45_server.served_name) as chat:
            replay = Replayer(chat)
            if kind == "tool":
                r = replay.chat(render_call("get_weather", {"city": f"city-{i}"}, "compact"), stream=stream, tools=[weather],
                                chat_template_kwargs={"enable_thinking": False})  # fmt: skip
                return i, r.calls() == [("get_weather", {"city": f"city-{i}"})], repr(r.calls())
            if kind == "reasoning":
                r = replay.chat(f"<think>thought {i}</think>answer {i}", stream=stream)
                return i, (r.reasoning, r.content) == (f"thought {i}", f"answer {i}"), repr((r.reasoning, r.content))
            if kind == "replay":
                r = replay.chat(f"echo {i} " * (1 + i % 7), stream=stream, chat_template_kwargs={"enable_thinking": False})
                return i, r.content == f"echo {i} " * (1 + i % 7), repr(r.content)
            r = chat.chat([{"role": "user", "content": f"plain {i}"}], stream=stream, max_tokens=1 + i % 16)
            return i, r.finish_reason in ("stop", "length") and (r.usage or {}).get("completion_tokens", 0) <= 1 + i % 16, repr(r.usage)

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(64)))
    wrong = [(i, got) for i, ok, got in results if not ok]
    assert not wrong, f"{len(wrong)} of 64 concurrent requests got someone else's answer or failed: {wrong[:5]}"


# -- security ------------------------------------------------------------------------------


def test_requests_without_the_key_get_401(glm45_server: ServerHandle) -> None:
    if not glm45_server.api_key:
        pytest.skip("this server was given no API key")
    body = {"model": glm45_server.served_name, "messages": GOOD_MESSAGES, "max_tokens": 1}
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": glm45_server.api_key}):
        resp = httpx.post(glm45_server.base_url + "/v1/chat/completions", json=body, headers=headers, timeout=DEADLINE_S)
        assert resp.status_code == 401, f"{headers or 'no header'}: HTTP {resp.status_code}"


def test_booted_servers_listen_on_loopback_only(glm45_server: ServerHandle) -> None:
    if not glm45_server.booted:
        pytest.skip("the server runs elsewhere")
    assert glm45_server.base_url.startswith("http://127.0.0.1:")
    port = int(glm45_server.base_url.rsplit(":", 1)[1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                listening.add(local.rsplit(":", 1)[0])
    assert listening == {"0100007F"}, f"port {port} listens on {listening} (0100007F is 127.0.0.1)"


def test_secrets_never_reach_the_server_log(glm45_server: ServerHandle) -> None:
    if glm45_server.log_path is None:
        pytest.skip("the server runs elsewhere: its log is not the kit's")
    import os

    log = glm45_server.log_path.read_text(errors="replace")
    secrets = [glm45_server.api_key or ""] + [os.environ.get(k, "") for k in SECRET_ENV]
    leaked = [s[:4] + "..." for s in secrets if len(s) >= 6 and s in log]
    assert not leaked, f"secrets found in {glm45_server.log_path}: {leaked}"

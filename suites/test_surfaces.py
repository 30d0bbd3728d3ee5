"""Every API GLM-4.5's users call: OpenAI Responses (Codex, the Agents SDK) and Anthropic Messages
(Claude Code, Anthropic-SDK clients), checked as thoroughly as Chat Completions.

Every replay case of the tool-calling and reasoning suites runs here on each surface, streamed and
not. The cases and their expectations are those suites' own (imported, never copied): the request is
stated in Chat Completions' terms and translated (`pytest_glm45.clients.surfaces.request`), the answer is
translated back to the kit's terms (content, reasoning, calls with typed arguments, finish reason)
and judged by the same check function the chat suites use. On top of that, every answer and every
stream event must validate against the official SDK's types (`pytest_glm45.clients.schemas`), a stream must
keep its API's event contract and add up to the non-streamed answer. (Chat Completions' answers to
the same cases get the schema validation in the chat suites' own `test_replay`.)

Also here: the official SDKs as clients, multi-turn history in each surface's own shape, a too-long
prompt, and hostile bodies on each surface.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from pytest_glm45.clients import surfaces
from pytest_glm45.clients.answers import ChatResult
from pytest_glm45.clients.batch import Checks
from pytest_glm45.clients.chat import ChatClient, HttpError, Replayer, curl_line
from pytest_glm45.clients.conservation import assert_replay_conserved
from pytest_glm45.engine.pool import ServerHandle
from pytest_glm45.glm.glm_format import render_call
from pytest_glm45.glm.toolcall import WEATHER as WEATHER_TOOL

#: Left out with --glm45-surfaces chat: see README "Surfaces". What a surface does with the parsers' output is
#: API-server code, the same on every parallel plan: a model's first plan runs it (every plan with --glm45-profile full).
pytestmark = [pytest.mark.glm45_surfaces, pytest.mark.glm45_first_plan]


def _sibling(name: str) -> ModuleType:
    """A sibling suite module, loaded from its file under a private name: the same cases whatever
    pytest's import mode (prepend, append or importlib), and none of its checks collected twice."""
    private = f"_glm45_surfaces_{name}"
    if private not in sys.modules:
        spec = importlib.util.spec_from_file_location(private, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None and spec.loader is not None, f"cannot load suites/{name}.py"
        module = importlib.util.module_from_spec(spec)
        sys.modules[private] = module
        spec.loader.exec_module(module)
    return sys.modules[private]


TOOLS = _sibling("test_tool_calling")
REASONING = _sibling("test_reasoning")
#: The surfaces beyond Chat Completions (whose expectations the chat suites check).
SURFACES = ("responses", "messages")
WEATHER = WEATHER_TOOL.schema()
THINKING_OFF = {"enable_thinking": False}


def surface_call(client: ChatClient, surface: str, messages: list[dict[str, Any]], stream: bool, script: str,
                 native: dict[str, Any] | None = None, **fields: Any) -> surfaces.SurfaceAnswer:  # fmt: skip
    """Replay `script` on `surface`; a refusal (HTTP status or a mid-stream error event) raises HttpError."""
    xargs = {**(fields.pop("vllm_xargs", None) or {}), "glm45_replay": script}
    try:
        return surfaces.call(client, surface, messages, stream=stream, native=native, vllm_xargs=xargs, **fields)
    except httpx.HTTPError as exc:
        # A stream the server cut off (no terminal event, no error event) is a refusal too: say so.
        raise HttpError(0, {"error": {"message": f"the server broke off the {'stream' if stream else 'answer'}: "
                                                 f"{type(exc).__name__}: {exc}"}}, surfaces.PATHS[surface]) from exc


def judged(surface: str, mode: str, answer: surfaces.SurfaceAnswer, checks: list[Callable[[], None]], base_url: str) -> None:
    """Run every check on one answer and fail with all that failed, the surface's own request attached."""
    failures = []
    for check in checks:
        try:
            check()
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        request = curl_line(base_url, answer.body, surfaces.PATHS[surface])
        pytest.fail(f"{surface} ({mode}):\n" + "\n\n".join(failures) + f"\n{surface} request by hand: {request}", pytrace=False)


def contract(answer: surfaces.SurfaceAnswer) -> Callable[[], None]:
    """The answer validates against the SDK's types and, streamed, keeps the API's event contract."""

    def check() -> None:
        assert not answer.problems, ("the answer breaks the published schema or the streaming contract:\n  "
                                     + "\n  ".join(answer.problems[:20]))  # fmt: skip

    return check


def agrees_with(plain: ChatResult, streamed: ChatResult) -> Callable[[], None]:
    """The streamed answer says what the non-streamed one says."""

    def check() -> None:
        assert streamed.essence() == plain.essence(), (f"streamed and non-streamed results differ:\n  stream: {streamed.essence()}"
                                                       f"\n  plain:  {plain.essence()}")  # fmt: skip

    return check


def refused(surface: str, mode: str, exc: HttpError, script: str) -> None:
    """Fail with the refusal; skip, saying so, when the server does not serve the surface at all."""
    if exc.status == 404 and "Not Found" in exc.message:
        pytest.skip(f"this vLLM does not serve {surfaces.PATHS[surface]} (HTTP 404 Not Found)")
    status = f"HTTP {exc.status}: " if exc.status else ""
    pytest.fail(f"{surface} ({mode}): {status}{exc.message}\nscript: {script!r}", pytrace=False)


# -- the tool-calling cases on every surface ----------------------------------------------------


def tool_job(replay: Replayer, params: Mapping[str, Any]) -> surfaces.SurfaceAnswer:
    """One tool-calling case on one surface, streamed or not: what the batch sends for an item."""
    case = params["case"]
    messages = TOOLS.messages(case) if hasattr(TOOLS, "messages") else [{"role": "user", "content": "Go ahead."}]
    return surface_call(replay.client, params["surface"], messages, params["mode"] == "stream", case.script, **TOOLS.request_fields(case))


@pytest.mark.glm45_twin(mode="plain")
@pytest.mark.glm45_surface_replay
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("case", TOOLS.CASES, ids=[c.id for c in TOOLS.CASES])
@pytest.mark.parametrize("surface", SURFACES)
def test_tool_call_replay(glm45_batch: Checks, glm45_server: ServerHandle, glm45_replay: Replayer, surface: str, case: Any, mode: str) -> None:
    """test_tool_calling's case, on this surface: the same expectation, the SDK's schema, the stream's
    contract, and (streamed) the same answer as the non-streamed one."""
    try:
        answer = glm45_batch.answer(tool_job)
    except HttpError as exc:
        refused(surface, mode, exc, case.script)
    checks = [lambda: TOOLS.check_expected(case, answer.result, glm45_replay, conserve=False), contract(answer),
              lambda: TOOLS.check_conserved(case, answer.result, glm45_replay, script=case.script)]  # fmt: skip
    if mode == "stream":
        try:
            plain = glm45_batch.answer(tool_job, {"surface": surface, "case": case, "mode": "plain"})
            checks.append(agrees_with(plain.result, answer.result))
        except HttpError:
            pass  # the plain twin fails on its own
    judged(surface, mode, answer, checks, glm45_replay.client.base_url)


# -- the reasoning cases on every surface ---------------------------------------------------------


def reasoning_job(replay: Replayer, params: Mapping[str, Any]) -> surfaces.SurfaceAnswer:
    """One reasoning case on one surface, streamed or not: what the batch sends for an item."""
    case = params["case"]
    return surface_call(replay.client, params["surface"], [{"role": "user", "content": case.user}], params["mode"] == "stream",
                        case.script, **REASONING.fields(case))  # fmt: skip


@pytest.mark.glm45_twin(mode="plain")
@pytest.mark.glm45_surface_replay
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("case", REASONING.case_params(REASONING.CASES))
@pytest.mark.parametrize("surface", SURFACES)
def test_reasoning_replay(glm45_batch: Checks, glm45_server: ServerHandle, glm45_replay: Replayer, surface: str, case: Any, mode: str) -> None:
    """test_reasoning's case, on this surface: the same split of reasoning and answer, the SDK's schema,
    the stream's contract, and (streamed) the same answer as the non-streamed one."""
    try:
        answer = glm45_batch.answer(reasoning_job)
    except HttpError as exc:
        refused(surface, mode, exc, case.script)
    checks = [lambda: REASONING.check(case, answer.result), contract(answer),
              lambda: REASONING.check_conserved(case, answer.result, glm45_replay, script=case.script)]  # fmt: skip
    if mode == "stream":
        try:
            plain = glm45_batch.answer(reasoning_job, {"surface": surface, "case": case, "mode": "plain"})
            checks.append(agrees_with(plain.result, answer.result))
        except HttpError:
            pass
    judged(surface, mode, answer, checks, glm45_replay.client.base_url)


# -- the official SDKs as clients ------------------------------------------------------------------

SDK_SCRIPT = "<think>Need the weather.</think>" + render_call("get_weather", {"city": "Paris", "days": 3}, "compact")
SDK_EXPECTED = ("Need the weather.", [("get_weather", {"city": "Paris", "days": 3})])
SDK_TEXT_SCRIPT = "<think>Easy.</think>It is 4."


@pytest.fixture
def anthropic_client(glm45_server: ServerHandle) -> Any:
    """An `anthropic.Anthropic` client for the server (its key as ANTHROPIC_API_KEY would send it:
    x-api-key), max_retries=0."""
    anthropic = pytest.importorskip("anthropic")
    # anthropic 2.x runs on httpx2 and refuses an httpx client, so its requests are not in the reproducer.
    client = anthropic.Anthropic(base_url=glm45_server.base_url, api_key=glm45_server.api_key or "none", max_retries=0, timeout=120.0)
    yield client
    client.close()


def _sdk_extra(script: str) -> dict[str, Any]:
    return {"vllm_xargs": {"glm45_replay": script}}


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_openai_sdk_responses_gets_the_call_and_the_reasoning(glm45_client: Any, glm45_replay: Replayer, mode: str) -> None:
    """`openai`'s Responses API (what Codex and the Agents SDK run): the SDK parses the answer (streamed:
    assembles it from its events) into the reasoning and a `function_call` with typed arguments."""
    kwargs = {"model": glm45_replay.client.model, "input": "Weather in Paris for 3 days?", "max_output_tokens": 512,
              "tools": [{"type": "function", **WEATHER["function"]}], "tool_choice": "auto", "extra_body": _sdk_extra(SDK_SCRIPT)}  # fmt: skip
    if mode == "plain":
        response = glm45_client.responses.create(**kwargs)
    else:
        with glm45_client.responses.stream(**kwargs) as stream:
            seen = [event.type for event in stream]
            response = stream.get_final_response()
        assert seen and seen[-1] == "response.completed", f"the SDK saw events {seen}"
    body = response.model_dump(mode="json")
    result = surfaces.from_responses(body)
    assert (result.reasoning, result.calls()) == SDK_EXPECTED, f"the SDK's response says {body['output']}"
    assert result.finish_reason == "tool_calls" and all(c.id for c in result.tool_calls)
    assert_replay_conserved(glm45_replay.client, SDK_SCRIPT, {"tools": [WEATHER]}, result, glm45_replay.opens_think)


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_anthropic_sdk_messages_gets_the_call_and_the_thinking(anthropic_client: Any, glm45_replay: Replayer, mode: str) -> None:
    """The `anthropic` package (what Claude Code runs), authenticated as ANTHROPIC_API_KEY does: the SDK
    parses the answer (streamed: accumulates it from the named events) into a thinking block and a
    `tool_use` block whose `input` is typed as declared; stop_reason tool_use."""
    tool = {"name": "get_weather", "description": WEATHER["function"]["description"], "input_schema": WEATHER["function"]["parameters"]}
    kwargs = {"model": glm45_replay.client.model, "max_tokens": 512, "tools": [tool], "tool_choice": {"type": "auto"},
              "messages": [{"role": "user", "content": "Weather in Paris for 3 days?"}], "extra_body": _sdk_extra(SDK_SCRIPT)}  # fmt: skip
    if mode == "plain":
        message = anthropic_client.messages.create(**kwargs)
    else:
        with anthropic_client.messages.stream(**kwargs) as stream:
            for _ in stream:
                pass
            message = stream.get_final_message()
    body = message.model_dump(mode="json")
    result = surfaces.from_messages(body)
    assert (result.reasoning, result.calls()) == SDK_EXPECTED, f"the SDK's message says {body['content']}"
    assert body["stop_reason"] == "tool_use", f"stop_reason {body['stop_reason']!r}"
    assert_replay_conserved(glm45_replay.client, SDK_SCRIPT, {"tools": [WEATHER]}, result, glm45_replay.opens_think)


def test_anthropic_sdk_text_answer(anthropic_client: Any, glm45_replay: Replayer) -> None:
    """A plain answer through the SDK, streamed: thinking then text, stop_reason end_turn."""
    with anthropic_client.messages.stream(model=glm45_replay.client.model, max_tokens=256, extra_body=_sdk_extra(SDK_TEXT_SCRIPT),
                                          messages=[{"role": "user", "content": "2 + 2?"}]) as stream:  # fmt: skip
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    body = message.model_dump(mode="json")
    assert [b["type"] for b in body["content"]] == ["thinking", "text"], body["content"]
    assert text == "It is 4." and body["stop_reason"] == "end_turn", (text, body["stop_reason"])
    assert_replay_conserved(glm45_replay.client, SDK_TEXT_SCRIPT, {}, surfaces.from_messages(body), glm45_replay.opens_think)


# -- thinking turned off the way an Anthropic client turns it off ------------------------------------

#: Text, then a call, no think block: what GLM-4.5 writes with thinking off.
UNTHOUGHT_SCRIPT = "Checking." + render_call("get_weather", {"city": "Paris", "days": 3}, "compact")


def unthought_job(replay: Replayer, params: Mapping[str, Any]) -> surfaces.SurfaceAnswer:
    """UNTHOUGHT_SCRIPT on /v1/messages with thinking off in Anthropic's terms, no chat_template_kwargs."""
    native = {"thinking": {"type": "disabled"}} if params["thinking"] == "disabled" else {}
    return surface_call(replay.client, "messages", [{"role": "user", "content": "Weather in Paris for 3 days?"}],
                        params["mode"] == "stream", UNTHOUGHT_SCRIPT, native=native, tools=[WEATHER], tool_choice="auto",
                        max_tokens=256)  # fmt: skip


@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("thinking", ["disabled", "not-requested"])
def test_messages_thinking_off_gives_text_and_tool_use(glm45_batch: Checks, glm45_replay: Replayer, thinking: str, mode: str) -> None:
    """An Anthropic client (Claude Code, the SDK) turns extended thinking off with `thinking: {"type":
    "disabled"}`, or by not asking for it: Anthropic's API returns thinking blocks only when `thinking`
    is enabled. Such a client sends no vLLM-specific `chat_template_kwargs`. The model's text before its
    call must come back as a `text` block and the call as `tool_use`, with no `thinking` block."""
    try:
        answer = glm45_batch.answer(unthought_job)
    except HttpError as exc:
        refused("messages", mode, exc, UNTHOUGHT_SCRIPT)

    def check() -> None:
        got = (answer.result.reasoning, answer.result.content, answer.result.calls())
        expected = (None, "Checking.", [("get_weather", {"city": "Paris", "days": 3})])
        assert got == expected, (f"with thinking {thinking} the answer's (thinking, text, calls) differ:\n  expected: {expected}"
                                 f"\n  got:      {got}")  # fmt: skip

    conserved = lambda: assert_replay_conserved(glm45_replay.client, UNTHOUGHT_SCRIPT, {"tools": [WEATHER]}, answer.result)  # noqa: E731
    judged("messages", mode, answer, [check, contract(answer), conserved], glm45_replay.client.base_url)


# -- multi-turn: a tool result in each surface's own shape ---------------------------------------------

NONCE = "NONCE-7d2e9"


def history(reasoning: str | None) -> list[dict[str, Any]]:
    """A user question, the assistant's call (with its reasoning, when given), and the tool's result."""
    assistant: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 3})}}]}  # fmt: skip
    if reasoning:
        assistant["reasoning"] = reasoning
    return [{"role": "user", "content": "What is the weather in Paris?"}, assistant,
            {"role": "tool", "tool_call_id": "call_1", "content": f"sunny, code {NONCE}"}]  # fmt: skip


@pytest.mark.parametrize("past", ["no-reasoning", "reasoning"])
@pytest.mark.parametrize("surface", SURFACES)
def test_tool_result_reaches_the_prompt(glm45_chat: ChatClient, glm45_replay: Replayer, surface: str, past: str) -> None:
    """A tool result sent back as `function_call_output` / a `tool_result` block, after the call as
    `function_call` / `tool_use` (and the call's reasoning as a `reasoning` item / `thinking` block),
    renders the prompt GLM-4.5's template makes of the same history on Chat Completions: the same
    token count, where the chat rendering holds the result's nonce, the call's arguments and (the
    reasoning being after the last user turn, which the template keeps) `<think>` with the reasoning."""
    reasoning = "I need the weather tool." if past == "reasoning" else None
    messages = history(reasoning)
    rendered = glm45_chat.tokenize_chat(messages, tools=[WEATHER], add_generation_prompt=True)
    text = "".join(rendered["token_strs"]).replace("Ġ", " ")
    assert NONCE in text and "<arg_value>Paris</arg_value>" in text, f"the chat rendering lacks the result or the call: {text[-400:]!r}"
    if reasoning:
        assert f"<think>{reasoning}</think>" in text, f"the chat rendering lacks the call's reasoning: {text[-400:]!r}"
    script = f"It is sunny ({NONCE})."
    try:
        answer = surface_call(glm45_chat, surface, messages, False, script, tools=[WEATHER], chat_template_kwargs=THINKING_OFF)
    except HttpError as exc:
        refused(surface, "plain", exc, script)
    usage = answer.result.usage or {}
    got = usage.get("input_tokens")
    chat_count = int(glm45_chat.tokenize_chat(messages, tools=[WEATHER], add_generation_prompt=True, chat_template_kwargs=THINKING_OFF)["count"])
    judged(surface, "plain", answer, [
        lambda: _assert(got == chat_count, f"the prompt is {got} tokens on {surface} and {chat_count} on chat for the same "
                                           f"history: the {surface} shape did not reach the template as the chat one does"),
        lambda: _assert(answer.result.content == script and not answer.result.tool_calls, f"answer {answer.result.essence()}"),
        contract(answer),
        lambda: assert_replay_conserved(glm45_chat, script, {"tools": [WEATHER], "chat_template_kwargs": THINKING_OFF}, answer.result)],
        glm45_chat.base_url)  # fmt: skip


def _assert(condition: bool, message: str) -> None:
    assert condition, message


# -- context length and hostile bodies on each surface ---------------------------------------------------


def surface_body(surface: str, model: str, content: str, max_tokens: int = 4, script: str = "ok") -> dict[str, Any]:
    """A small valid request on `surface` (replaying `script`), the base the hostile bodies break."""
    return surfaces.request(surface, model, [{"role": "user", "content": content}], max_tokens=max_tokens,
                            vllm_xargs={"glm45_replay": script})  # fmt: skip


@pytest.mark.glm45_strict_irrelevant
@pytest.mark.parametrize("surface", SURFACES)
def test_too_long_prompt_is_a_clean_4xx(glm45_chat: ChatClient, glm45_server: ServerHandle, surface: str) -> None:
    """A prompt of twice the window gets a 4xx with an error body naming the length, and the server keeps serving."""
    window = int(glm45_server.max_model_len or 8192)
    body = surface_body(surface, glm45_chat.model, " the" * (2 * window))
    resp = glm45_chat.send(surfaces.PATHS[surface], body, timeout=120)
    assert 400 <= resp.status_code < 500, f"{surface}: a {2 * window}-token prompt got HTTP {resp.status_code}: {resp.text[:300]}"
    assert _error_message(resp), f"{surface}: HTTP {resp.status_code} without an error body: {resp.text[:300]}"
    assert any(w in _error_message(resp).lower() for w in ("context", "maximum", "length", "too long", "tokens")), _error_message(resp)
    ok = glm45_chat.send(surfaces.PATHS[surface], surface_body(surface, glm45_chat.model, "Hi"), timeout=60)
    assert ok.status_code == 200, f"{surface}: after the refusal a small request got HTTP {ok.status_code}: {ok.text[:300]}"


def _error_message(resp: httpx.Response) -> str:
    """The error's message in Anthropic's (`error.message`) or OpenAI's (`error.message`, `message`) shape; '' if none."""
    try:
        data = resp.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    err = data.get("error")
    if isinstance(err, dict) and err.get("message"):
        return str(err["message"])
    return str(data.get("message") or data.get("detail") or "")


def _broken(surface: str, model: str, **changes: Any) -> dict[str, Any]:
    body = surface_body(surface, model, "Hi")
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DROP = object()
#: Invalid by the API's contract, each one: must be a 4xx with an error body.
HOSTILE: dict[str, dict[str, Any]] = {
    "messages": {
        "no-max-tokens": {"max_tokens": _DROP},
        "no-messages": {"messages": _DROP},
        "max-tokens-negative": {"max_tokens": -5},
        "max-tokens-string": {"max_tokens": "ten"},
        "messages-not-a-list": {"messages": "hello"},
        "role-system-in-messages": {"messages": [{"role": "system", "content": "x"}]},
        "unknown-block-type": {"messages": [{"role": "user", "content": [{"type": "hologram", "data": "x"}]}]},
        "tool-use-without-id": {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": [
            {"type": "tool_use", "name": "f", "input": {}}]}]},
        "tool-without-input-schema": {"tools": [{"name": "f"}]},
        "tool-choice-unknown-type": {"tool_choice": {"type": "sometimes"}},
        "temperature-string": {"temperature": "hot"},
    },
    "responses": {
        "no-input": {"input": _DROP},
        "input-a-number": {"input": 42},
        "unknown-item-type": {"input": [{"type": "hologram", "data": "x"}]},
        "function-call-output-without-call-id": {"input": [{"type": "function_call_output", "output": "x"}]},
        "function-call-without-name": {"input": [{"type": "function_call", "call_id": "c1", "arguments": "{}"}]},
        "tool-without-name": {"tools": [{"type": "function", "parameters": {"type": "object"}}]},
        "tool-unknown-type": {"tools": [{"type": "teleport"}]},
        "max-output-tokens-negative": {"max_output_tokens": -5},
        "max-output-tokens-string": {"max_output_tokens": "ten"},
        "temperature-string": {"temperature": "hot"},
        "tool-choice-unknown": {"tool_choice": "sometimes"},
    },
}
HOSTILE_CASES = [(s, name) for s in SURFACES for name in HOSTILE[s]]


@pytest.mark.glm45_strict_irrelevant
@pytest.mark.parametrize("case", HOSTILE_CASES, ids=[f"{s}-{n}" for s, n in HOSTILE_CASES])
def test_invalid_body_is_refused(glm45_batch: Checks, case: tuple[str, str]) -> None:
    """Each named invalid body gets a 4xx with an error body, never a 5xx or a 200."""

    def job(replay: Replayer, params: Mapping[str, Any]) -> httpx.Response:
        surface, name = params["case"]
        return replay.client.send(surfaces.PATHS[surface], _broken(surface, replay.client.model, **HOSTILE[surface][name]), timeout=60)

    resp = glm45_batch.answer(job)
    surface, name = case
    assert 400 <= resp.status_code < 500, f"{surface} {name}: an invalid body got HTTP {resp.status_code}: {resp.text[:300]}"
    assert _error_message(resp), f"{surface} {name}: HTTP {resp.status_code} without an error message: {resp.text[:300]}"


junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 0), st.floats(allow_nan=False), st.text(max_size=12),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))  # fmt: skip
blocks = st.lists(st.dictionaries(st.sampled_from(["type", "text", "id", "name", "input", "tool_use_id", "content", "thinking"]),
                                  junk | st.sampled_from(["text", "tool_use", "tool_result", "thinking", "image"]), max_size=4),
                  max_size=3)  # fmt: skip
items = st.lists(st.dictionaries(st.sampled_from(["type", "role", "content", "call_id", "name", "arguments", "output", "id"]),
                                 junk | st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "user"]),
                                 max_size=4), max_size=3)  # fmt: skip


@st.composite
def hostile_body(draw: st.DrawFn, surface: str) -> dict[str, Any]:
    """A small valid body with one to three of its fields replaced by junk (or dropped), or junk added."""
    body = surface_body(surface, "glm45", "Hi")
    keys = ["model", "messages", "max_tokens", "tools", "tool_choice", "system", "temperature", "stop_sequences", "thinking", "metadata"] \
        if surface == "messages" else ["model", "input", "max_output_tokens", "tools", "tool_choice", "instructions", "temperature",
                                       "reasoning", "text", "previous_response_id", "include"]  # fmt: skip
    for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
        if key == "model":
            continue  # the served name is filled in at send time; an unknown model is the chat suite's named case
        value = draw(st.one_of(junk, st.just(_DROP), blocks if surface == "messages" else items,
                               st.builds(lambda c: [{"role": "user", "content": c}], blocks)))  # fmt: skip
        if key in ("max_tokens", "max_output_tokens") and isinstance(value, int) and not isinstance(value, bool) and value > 64:
            value = -value  # a large valid budget is a long generation, not a hostile body
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


#: Generated hostile bodies per surface (the robustness suite's chat batch is 500 in the standard profile).
GENERATED = 48


@pytest.mark.glm45_strict_irrelevant
@pytest.mark.parametrize("surface", SURFACES)
def test_generated_hostile_bodies_never_get_a_5xx(glm45_batch: Checks, glm45_chat: ChatClient, glm45_examples: Callable[[int], int],
                                                   surface: str) -> None:  # fmt: skip
    """GENERATED hostile bodies (a share of them on a model's other plans), sent together: every one
    gets an answer within 60 s, never a 5xx, and every 4xx carries an error message."""
    count = max(4, glm45_examples(GENERATED))
    drawn: list[dict[str, Any]] = []

    @seed(15)
    @settings(max_examples=count, database=None, deadline=None)
    @given(hostile_body(surface))
    def draw(body: dict[str, Any]) -> None:
        drawn.append({**body, "model": glm45_chat.model} if "model" in body else body)

    draw()
    jobs = [(lambda b=body: glm45_chat.send(surfaces.PATHS[surface], b, timeout=60)) for body in drawn]
    bad = []
    for body, outcome in zip(drawn, glm45_batch.run_all(jobs), strict=True):
        if outcome.error is not None:
            bad.append(f"no answer ({type(outcome.error).__name__}: {outcome.error}) to {json.dumps(body)[:300]}")
            continue
        resp = outcome.get()
        if resp.status_code >= 500 or (400 <= resp.status_code < 500 and not _error_message(resp)):
            bad.append(f"HTTP {resp.status_code} {resp.text[:200]!r} to {json.dumps(body)[:300]}")
    assert not bad, f"{len(bad)} of {len(jobs)} hostile {surface} bodies broke the contract:\n  " + "\n  ".join(bad[:10])

"""Tool calling: vLLM's glm45 parser turns GLM-4.5's output into OpenAI tool calls, streamed and not.

Replay makes the model emit exactly the GLM-4.5 text each case gives, so every check is
deterministic on any model. Each case runs twice: `plain` checks the non-streamed answer
against the expectation; `stream` checks the streamed answer against the same expectation,
against the non-streamed one, and against the streaming protocol.

Every case with a call runs in both formats, its id ending in the format: `-native` (GLM-4.5 and
GLM-4.6: a newline after the name and after each tag pair) and `-compact` (GLM-4.7: none). The
model under test writes one of them (`own_format`, recorded as the `glm45_own_format` property and
named in every failure); parsers accept both, so the other runs too. Cases whose point is one exact
spelling (`-as-text`: markup written as ordinary text pieces, not the added token) say so in their id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from pytest_glm45.clients.answers import ChatResult, markup_leaks, protocol_violations
from pytest_glm45.clients.batch import Checks
from pytest_glm45.clients.chat import ChatClient, HttpError, Replayer, curl_line
from pytest_glm45.clients.conservation import assert_replay_conserved
from pytest_glm45.clients.surfaces import assert_chat_schema
from pytest_glm45.glm.glm_format import STYLES, render_call, render_calls
from pytest_glm45.glm.replay import REPLAY_XARG, as_text_xargs, replayed_script
from pytest_glm45.glm.toolcall import WEATHER, Tool

# -- the tools the cases call -----------------------------------------------------------

GET = Tool("get", {"key": {"type": "string"}}, ("key",))
NOOP = Tool("noop")
MCP = Tool("mcp__files-server__list_dir", {"path": {"type": "string"}, "recursive": {"type": "boolean"}}, ("path",))
TYPED = Tool(
    "record",
    {
        "text": {"type": "string"},
        "count": {"type": "integer"},
        "score": {"type": "number"},
        "flag": {"type": "boolean"},
        "items": {"type": "array", "items": {"type": "integer"}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object", "properties": {"a": {"type": "object"}}},
        "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "either": {"type": ["string", "null"]},
        "nothing": {"type": "null"},
    },
)
ALL_TOOLS = [t.schema() for t in (WEATHER, GET, NOOP, MCP, TYPED)]

THINKING_OFF = {"enable_thinking": False}
USER = {"role": "user", "content": "Go ahead."}


@dataclass(frozen=True)
class Case:
    """A scripted model output and what the parser must make of it."""

    id: str
    script: str
    calls: list[tuple[str, dict[str, Any]]]
    content: str | None = None
    reasoning: str | None = None
    thinking: bool = False
    tools: list[dict[str, Any]] = field(default_factory=lambda: ALL_TOOLS)
    #: Where the format and the API leave a choice: every (calls, content) pair a correct server may return.
    #: Nothing the model wrote may be lost: a call either parses or comes back as its text.
    alternatives: tuple[tuple[tuple[tuple[str, dict[str, Any]], ...], str | None], ...] = ()
    #: The tool-call format the script is written in ("native" or "compact"); None where the exact script is the point.
    format: str | None = None
    #: Markup the script spells as ordinary text pieces instead of its single added token (replay's as-text xarg).
    as_text: tuple[str, ...] = ()
    #: Earlier turns, before the user's "Go ahead.".
    history: tuple[dict[str, Any], ...] = ()


def rec(**args: Any) -> tuple[str, dict[str, Any]]:
    return ("record", args)


def axis(case_id: str, make: Callable[[str], Case]) -> list[Case]:
    """The case in both formats: `make(style)` for each, with ids `<case_id>-native` and `<case_id>-compact`."""
    return [replace(make(style), id=f"{case_id}-{style}", format=style) for style in STYLES]


def calls_case(case_id: str, calls: list[tuple[str, dict[str, Any]]], **fields: Any) -> list[Case]:
    """These calls, one after another, in both formats."""
    return axis(case_id, lambda style: Case("", render_calls(calls, style), calls, **fields))


def typed_case(case_id: str, **args: Any) -> list[Case]:
    """A `record` call whose values must come back with these exact JSON types, in both formats."""
    return calls_case(case_id, [rec(**args)])


def literal_string_case(case_id: str, text: str) -> list[Case]:
    """A string parameter whose value looks like another literal: it must stay that exact string."""
    return typed_case(case_id, text=text)


def call_or_text(case_id: str, calls: list[tuple[str, dict[str, Any]]], spell: Callable[[str], str],
                 parsed: tuple[tuple[tuple[str, dict[str, Any]], ...], ...] = (), **fields: Any) -> list[Case]:  # fmt: skip
    """A call the format leaves open: the server may parse it (as `calls`, or as one of `parsed`) or return
    the text the model wrote (`spell(style)`) as content; never nothing."""

    def make(style: str) -> Case:
        text = spell(style)
        accepted = ((tuple(calls), None), *((p, None) for p in parsed), ((), text))
        return Case("", text, [], alternatives=accepted, **fields)

    return axis(case_id, make)


def as_text_case(case_id: str, calls: list[tuple[str, dict[str, Any]]], markup: tuple[str, ...], before: str = "") -> list[Case]:
    """Calls written with `markup` spelled as ordinary text pieces: GLM's tags are the same characters
    either way, so a server may parse the calls or return the text, but never drop them."""

    def make(style: str) -> Case:
        text = before + ("\n" if before and style == "native" else "") + render_calls(calls, style)
        return Case("", text, [], as_text=markup, alternatives=((tuple(calls), before or None), ((), text)))

    return axis(case_id, make)


def drop_first_arg_key(style: str, name: str, args: dict[str, Any]) -> str:
    """A call whose first `<arg_key>` tag is missing (`<tool_call>get_weathercity</arg_key>...`)."""
    return render_call(name, args, style).replace("<arg_key>", "", 1)


PARIS = ("get_weather", {"city": "Paris", "days": 3})
ROME = ("get_weather", {"city": "Rome"})
SEARCH = Tool("search_web", {"query": {"type": "string"}}, ("query",))
#: An earlier turn that called `search_web`, which the new request no longer declares.
SEARCH_HISTORY = (
    {"role": "user", "content": "Search the web for vLLM releases."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_s1", "type": "function", "function": {"name": "search_web", "arguments": json.dumps({"query": "vLLM releases"})}}]},
    {"role": "tool", "tool_call_id": "call_s1", "content": "vLLM 0.32.0 is out."},
)  # fmt: skip

CASES: list[Case] = [
    # one call, several calls, the same tool twice
    *calls_case("one-call", [PARIS]),
    *calls_case("three-calls", [PARIS, ROME, ("get", {"key": "k1"})]),
    *calls_case("same-tool-twice", [PARIS, ROME]),
    # zero-argument calls (native: `<tool_call>noop\n</tool_call>`, compact: `<tool_call>noop</tool_call>`)
    *calls_case("zero-args", [("noop", {})]),
    *calls_case("zero-args-then-call", [("noop", {}), ROME]),
    # text and reasoning around calls (GLM-4.5 writes a newline between its text and a call)
    *axis("text-before-call", lambda style: Case("", "Let me check." + ("\n" if style == "native" else "") + render_call(*PARIS, style),
                                                 [PARIS], content="Let me check.")),
    *axis("reasoning-then-call", lambda style: Case("", "<think>The user wants weather.</think>" + render_call(*PARIS, style), [PARIS],
                                                    reasoning="The user wants weather.", thinking=True)),
    # typed values keep their JSON types
    *typed_case("integer", count=42),
    *typed_case("negative-integer", count=-17),
    *typed_case("number", score=3.25),
    *typed_case("boolean-true", flag=True),
    *typed_case("boolean-false", flag=False),
    *typed_case("null", nothing=None),
    *typed_case("array", items=[1, 2, 3]),
    *typed_case("nested-object", meta={"a": {"b": [1, "x", None], "c": True}}),
    *typed_case("all-types-together", text="t", count=1, score=0.5, flag=True, items=[2], meta={"a": {}}),
    *typed_case("typed-values", text="007", count=5, flag=False, items=[1], meta={"a": {"b": None}}),
    *calls_case("undeclared-key", [("get", {"key": "k", "extra": 7})]),
    # strings that look like other literals stay strings
    *literal_string_case("string-123_456", "123_456"),
    *literal_string_case("string-007", "007"),
    *literal_string_case("string-1e3", "1e3"),
    *literal_string_case("string-true", "true"),
    *literal_string_case("string-null", "null"),
    *literal_string_case("string-[1]", "[1]"),
    *literal_string_case("string-42", "42"),
    *literal_string_case("string-empty", ""),
    *literal_string_case("string-padded", "  padded  "),
    # unions, arrays of strings, nested objects
    *typed_case("anyof-string", maybe="abc"),
    *typed_case("anyof-null", maybe=None),
    *typed_case("type-list-string", either="hello"),
    *typed_case("type-list-null", either=None),
    *typed_case("array-of-strings", tags=["a", "b c", "007"]),
    # From the trackers: a streamed optional value (anyOf string or null) is typed only once it is complete
    # (sgl-project/sglang#39136, #35914: `null` streamed as "null"/"None"), and streamed arrays and objects
    # as the last argument (sgl-project/sglang#36688: the outer object left unclosed; #11888: GLM-4.6 streamed
    # arguments), in GLM-4.5's native format as well as GLM-4.7's.
    *typed_case("anyof-null-after-string", text="t", maybe=None),
    *typed_case("anyof-string-then-type-list-null", maybe="x y", either=None),
    *typed_case("array-last", text="t", items=[4, 5, 6]),
    *typed_case("empty-array", items=[]),
    *typed_case("arrays-together", items=[7], tags=["p", "q r"]),
    *typed_case("object-last", text="t", meta={"a": {"b": [1, 2]}}),
    # hard characters
    *literal_string_case("unicode", "Zürich, 東京, Ελλάδα"),
    *literal_string_case("emoji", "rain 🌧️ then ☀️"),
    *literal_string_case("quotes", 'He said "hi" and \'bye\''),
    *literal_string_case("backslashes", "C:\\path\\to\\file \\n not a newline"),
    *literal_string_case("newlines", "line one\nline two\n\nline four"),
    *literal_string_case("html-markup", "<b>x</b> & <i>y</i>"),
    *literal_string_case("arg-value-fragment", "a </arg_value b <arg_key c"),
    *literal_string_case("long-value", "lorem ipsum " * 40),
    # names
    *calls_case("prefix-names", [("get", {"key": "a"}), ("get_weather", {"city": "Oslo"})]),
    *calls_case("mcp-name", [(MCP.name, {"path": "/tmp", "recursive": True})]),
    # A call to a tool the request does not declare: a server may return it as a call (its arguments
    # untyped or typed) or as the text the model wrote, but never drop it.
    *call_or_text("unknown-name", [("launch_rockets", {"count": 3})], lambda style: render_call("launch_rockets", {"count": 3}, style),
                  parsed=((("launch_rockets", {"count": "3"}),),)),
    # The same for a tool an earlier turn called and this request no longer declares: models repeat names from
    # the history (InternLM/lmdeploy#4901; vLLM >= 0.24 drops such calls silently: PrimeIntellect-ai/renderers#114;
    # sgl-project/sglang#33902: streamed and one-shot parsing disagree on them).
    *call_or_text("tool-from-earlier-turn", [("search_web", {"query": "vLLM 0.33"})],
                  lambda style: render_call("search_web", {"query": "vLLM 0.33"}, style),
                  tools=[WEATHER.schema()], history=SEARCH_HISTORY),
    # A call whose first <arg_key> is missing (`<tool_call>get_weathercity</arg_key>...`, seen from GLM-4.7 in
    # vllm-project/vllm#47190): a server may recover the declared call or return the text, never drop it or
    # invent a tool named `get_weathercity</arg_key>...`.
    *call_or_text("missing-first-arg-key", [("get_weather", {"city": "Paris"})],
                  lambda style: drop_first_arg_key(style, "get_weather", {"city": "Paris"})),
    # Markup spelled as ordinary text pieces (`<`, `tool`, `_`, `call`, `>`) instead of the added token: a
    # grammar that matches text accepts it while a streaming parser that waits for the token id never sees the
    # call (vllm-project/vllm#58105). The call may parse or come back as its text; it may not vanish.
    *as_text_case("tool-call-open-as-text", [PARIS], ("<tool_call>",)),
    *as_text_case("tool-call-tags-as-text", [PARIS], ("<tool_call>", "</tool_call>")),
    *as_text_case("all-call-markup-as-text", [PARIS], ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")),
    *as_text_case("text-before-call-as-text", [PARIS], ("<tool_call>", "</tool_call>"), before="Let me check."),
]
assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique: they are check ids"


def request_fields(case: Case) -> dict[str, Any]:
    fields: dict[str, Any] = {"tools": case.tools, "tool_choice": "auto", "max_tokens": 2048}
    if not case.thinking:
        fields["chat_template_kwargs"] = THINKING_OFF
    if case.as_text:
        fields["vllm_xargs"] = as_text_xargs(case.as_text)
    return fields


def messages(case: Case) -> list[dict[str, Any]]:
    return [*case.history, USER]


def request_body(case: Case, replay: Replayer) -> dict[str, Any]:
    """The whole request a case sends, for a by-hand replay."""
    body = replay.client.chat_body(messages(case), **request_fields(case))
    body["vllm_xargs"] = {**(body.get("vllm_xargs") or {}), REPLAY_XARG: case.script}
    return body


def format_note(case: Case, own: str | None) -> str:
    if case.format is None:
        return "an exact script (no format axis)"
    if own is None:
        return case.format
    return f"{case.format} (" + ("the model's own format)" if case.format == own else f"not the model's own format, which is {own})")


def explain(case: Case, result: ChatResult, replay: Replayer, own: str | None = None) -> str:
    spelled = f"\nspelled:  {' '.join(case.as_text)} as ordinary text pieces, not the added token" if case.as_text else ""
    return (
        f"\nscript:   {case.script!r}{spelled}\nformat:   {format_note(case, own)}\nexpected: "
        + (f"one of {list(case.alternatives)}" if case.alternatives else f"calls={case.calls} content={case.content!r}")
        + f" reasoning={case.reasoning!r}"
        f"\ngot:      calls={[(c.name, c.arguments) for c in result.tool_calls]} content={result.content!r} "
        f"reasoning={result.reasoning!r} finish={result.finish_reason!r}\nreplay by hand: {curl_line(replay.client.base_url, request_body(case, replay))}"
    )


def check_expected(case: Case, result: ChatResult, replay: Replayer, own: str | None = None, conserve: bool = True) -> None:
    """The case's expectation (calls, content, reasoning, finish reason, ids), then conservation (`conserve`)."""
    why = explain(case, result, replay, own)
    calls = case.calls
    if case.alternatives:
        got = (tuple(result.calls()), result.content)
        assert got in case.alternatives, (f"neither a call nor the model's text came back as written (the output was lost or "
                                          f"changed); accepted: {list(case.alternatives)}" + why)  # fmt: skip
        calls = list(got[0])
    else:
        assert result.calls() == case.calls, "parsed calls differ" + why
        assert result.content == case.content, "content differs" + why
        assert not markup_leaks(result), "markup in content" + why
    assert result.reasoning == case.reasoning, "reasoning differs" + why
    assert result.finish_reason == ("tool_calls" if calls else "stop"), "finish_reason" + why
    ids = [c.id for c in result.tool_calls]
    assert all(ids) and len(set(ids)) == len(ids), f"tool-call ids must be present and distinct: {ids}" + why
    if conserve:
        check_conserved(case, result, replay)


def check_conserved(case: Case, result: ChatResult, replay: Replayer, script: str | None = None) -> None:
    """Conservation (pytest_glm45.clients.conservation): the answer accounts for every token of the script, whichever
    of the case's alternatives it took. `script`: what the replay processor got, when not the Replayer's rendering."""
    fields = request_fields(case)
    written = replayed_script(case.script, replay.opens_think, case.thinking) if script is None else script
    assert_replay_conserved(replay.client, written, fields, result, replay.opens_think, case.format)


def replay_case(replay: Replayer, case: Case, stream: bool) -> ChatResult:
    try:
        return replay.chat(case.script, messages(case), stream=stream, **request_fields(case))
    except HttpError as exc:
        pytest.fail(f"HTTP {exc.status}: {exc.message}\nscript: {case.script!r}\nformat: {format_note(case, None)}", pytrace=False)


def model_own_format(server: Any) -> str:
    """The tool-call format the served model writes itself (`ServerHandle.own_format`: its model's, as booted or
    declared; what its served name says when a remote server's model was not declared)."""
    return str(server.own_format)


def replay_job(replay: Replayer, params: Mapping[str, Any]) -> ChatResult:
    """One case's request, streamed or not: what the batch sends for a `test_replay` item."""
    return replay_case(replay, params["case"], stream=params["mode"] == "stream")


@pytest.mark.glm45_twin(mode="plain")
@pytest.mark.glm45_parser_case
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_replay(glm45_batch: Checks, glm45_replay: Replayer, glm45_server: Any, case: Case, mode: str, record_property: Any) -> None:
    """Each case's answer comes from its configuration's batch (every case, both modes, sent together);
    the `stream` twin compares against the same non-streamed answer the `plain` check judged. The case's
    format and the model's own are recorded (`glm45_format`, `glm45_own_format`) and named in a failure.
    The answer (every chunk, streamed) must also validate against the openai SDK's types."""
    own = model_own_format(glm45_server)
    record_property("glm45_format", case.format or "exact-script")
    record_property("glm45_own_format", own)
    result = glm45_batch.answer(replay_job)
    if mode == "plain":
        check_expected(case, result, glm45_replay, own)
        assert_chat_schema(result, stream=False)
        return
    problems = protocol_violations(result.raw, "auto")
    if result.content and ((), result.content) in case.alternatives:
        # The model's text came back as written, which the case accepts: its tags in content are that text.
        problems = [p for p in problems if "leaked into content" not in p]
    assert not problems, "streaming protocol broken:\n  " + "\n  ".join(problems) + explain(case, result, glm45_replay, own)
    check_expected(case, result, glm45_replay, own)
    plain = glm45_batch.answer(replay_job, {"case": case, "mode": "plain"})
    assert result.essence() == plain.essence(), "streamed and non-streamed results differ" + explain(case, result, glm45_replay, own)
    assert_chat_schema(result, stream=True)


def test_batched_replays_each_get_their_own_script(glm45_batch: Checks, glm45_replay: Replayer, glm45_settings: Any) -> None:
    """The batching the replay checks rely on: twice --glm45-concurrency distinct scripts (calls and
    text, streamed and not) in flight together, and every answer is its own script's, never a neighbour's."""
    count = 2 * glm45_settings.concurrency
    scripts = [render_call("get", {"key": f"k{i:03d}"}, "compact") if i % 2 else f"Answer {i:03d}." for i in range(count)]
    fields: dict[str, Any] = {"tools": ALL_TOOLS, "chat_template_kwargs": THINKING_OFF}
    jobs = [(lambda sc=script, st=i % 4 >= 2: glm45_replay.chat(sc, stream=st, **fields)) for i, script in enumerate(scripts)]
    crossed = []
    answers = [outcome.get() for outcome in glm45_batch.run_all(jobs)]
    for i, got in enumerate(answers):
        want = ([("get", {"key": f"k{i:03d}"})], None) if i % 2 else ([], f"Answer {i:03d}.")
        if (got.calls(), got.content) != want:
            crossed.append(f"#{i}: sent {scripts[i]!r}, got calls={got.calls()} content={got.content!r}")
    assert not crossed, f"{len(crossed)} of {count} concurrent replays came back with another answer:\n  " + "\n  ".join(crossed[:10])
    for script, got in zip(scripts, answers, strict=True):
        assert_replay_conserved(glm45_replay.client, script, fields, got)


# -- tool_choice ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", STYLES)
def test_tool_choice_none_returns_no_tool_calls(glm45_replay: Replayer, fmt: str) -> None:
    """`tool_choice: "none"`: no call comes back, and (conservation) the call the model wrote comes back as its text."""
    script = render_call(*PARIS, fmt)
    fields: dict[str, Any] = {"tools": ALL_TOOLS, "tool_choice": "none", "chat_template_kwargs": THINKING_OFF}
    result = glm45_replay.chat(script, **fields)
    assert result.tool_calls == []
    assert result.finish_reason == "stop"
    assert_replay_conserved(glm45_replay.client, script, fields, result, style=fmt)


def guided_request(choice: str, fmt: str) -> tuple[str, dict[str, Any]]:
    """What `test_tool_choice_guided` replays and sends for `required` or a named tool (`pytest-glm45 upstream`
    carries the same request): one get_weather call in the format `fmt`, thinking off."""
    tool_choice: Any = "required" if choice == "required" else {"type": "function", "function": {"name": "get_weather"}}
    script = render_call("get_weather", {"city": "Paris", "days": 3}, fmt)
    return script, {"tools": ALL_TOOLS, "tool_choice": tool_choice, "chat_template_kwargs": THINKING_OFF}


@pytest.mark.parametrize("fmt", STYLES)
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("choice", ["required", "named"])
def test_tool_choice_guided(glm45_replay: Replayer, choice: str, mode: str, fmt: str) -> None:
    """`required` and a named tool are served by guided decoding: the right tool, valid arguments, a prompt end."""
    script, fields = guided_request(choice, fmt)
    max_tokens = 512
    result = glm45_replay.chat(script, stream=mode == "stream", max_tokens=max_tokens, **fields)
    assert [c.name for c in result.tool_calls] == ["get_weather"], f"got {result.tool_calls}"
    args = result.tool_calls[0].parsed()
    assert args == {"city": "Paris", "days": 3}
    assert result.finish_reason in (("tool_calls",) if choice == "required" else ("stop", "tool_calls"))
    assert result.usage is not None and result.usage["completion_tokens"] < max_tokens // 4
    assert_replay_conserved(glm45_replay.client, script, fields, result, style=fmt)


# -- multi-turn -------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["string", "content-parts"])
def test_history_with_tool_calls_and_results_renders_the_nonce(glm45_chat: ChatClient, glm45_replay: Replayer, form: str) -> None:
    nonce = f"NONCE-{form}-8c41f"
    content: Any = nonce if form == "string" else [{"type": "text", "text": nonce}]
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 3})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": content},
    ]  # fmt: skip
    rendered = "".join(glm45_chat.tokenize_chat(messages, tools=ALL_TOOLS, add_generation_prompt=True)["token_strs"])
    assert nonce in rendered.replace("Ġ", " "), f"the tool result is not in the rendered prompt: {rendered[-400:]!r}"
    assert "<arg_value>Paris</arg_value>" in rendered and "<arg_value>3</arg_value>" in rendered
    fields: dict[str, Any] = {"tools": ALL_TOOLS, "chat_template_kwargs": THINKING_OFF}
    answer = glm45_replay.chat(f"It is sunny ({nonce}).", messages=messages, **fields)
    assert answer.content == f"It is sunny ({nonce})." and answer.tool_calls == []
    assert_replay_conserved(glm45_replay.client, f"It is sunny ({nonce}).", fields, answer)


# -- live, real weights only ------------------------------------------------------------


@pytest.mark.glm45_live
def test_live_model_calls_the_tool_it_needs(glm45_chat: ChatClient, weather_tool: dict[str, Any]) -> None:
    result = glm45_chat.chat([{"role": "user", "content": "What's the weather in Paris for the next 3 days? Use the tool."}],
                             tools=[weather_tool], max_tokens=4096, temperature=0)  # fmt: skip
    assert [c.name for c in result.tool_calls] == ["get_weather"]
    assert "paris" in result.tool_calls[0].parsed()["city"].lower()
    assert result.finish_reason == "tool_calls" and not markup_leaks(result)


@pytest.mark.glm45_live
def test_live_model_calls_two_tools_in_parallel(glm45_chat: ChatClient, weather_tool: dict[str, Any]) -> None:
    result = glm45_chat.chat([{"role": "user", "content": "Get the weather in Paris and in Rome. Call the tool for both cities at once."}],
                             tools=[weather_tool], max_tokens=4096, temperature=0)  # fmt: skip
    cities = sorted(c.parsed()["city"].lower() for c in result.tool_calls)
    assert cities == ["paris", "rome"]


@pytest.mark.glm45_live
def test_live_model_answers_without_a_tool_when_none_is_needed(glm45_chat: ChatClient, weather_tool: dict[str, Any]) -> None:
    result = glm45_chat.chat([{"role": "user", "content": "What is 2 + 2? Answer with the number only."}],
                             tools=[weather_tool], max_tokens=4096, temperature=0)  # fmt: skip
    assert result.tool_calls == [] and "4" in (result.content or "")


@pytest.mark.glm45_live
def test_live_model_uses_the_tool_result(glm45_chat: ChatClient, weather_tool: dict[str, Any]) -> None:
    nonce = "XQ-7731"
    messages = [
        {"role": "user", "content": "Look up the weather code for Paris and tell me the code."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"weather code: {nonce}"},
    ]  # fmt: skip
    result = glm45_chat.chat(messages, tools=[weather_tool], max_tokens=4096, temperature=0)
    assert nonce in (result.content or "") and not markup_leaks(result)


# -- property-based ---------------------------------------------------------------------

from hypothesis import Phase, example, given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_glm45.glm.glm_format import SPECIAL_TOKENS  # noqa: E402

# Text GLM can write raw inside <arg_value>: anything but its own markup and control tokens.
SAFE_TEXT = st.text(max_size=12).filter(lambda s: not any(tok in s for tok in SPECIAL_TOKENS))
VALUE_TYPES: dict[str, tuple[dict[str, Any], st.SearchStrategy[Any]]] = {
    "string": ({"type": "string"}, SAFE_TEXT),
    "integer": ({"type": "integer"}, st.integers(-(10**12), 10**12)),
    "number": ({"type": "number"}, st.floats(allow_nan=False, allow_infinity=False, width=32)),
    "boolean": ({"type": "boolean"}, st.booleans()),
    "int-array": ({"type": "array", "items": {"type": "integer"}}, st.lists(st.integers(-1000, 1000), max_size=4)),
    "str-array": ({"type": "array", "items": {"type": "string"}}, st.lists(SAFE_TEXT, max_size=2)),
    "object": ({"type": "object"}, st.dictionaries(st.sampled_from("abc"), st.integers() | st.booleans() | st.none(), max_size=3)),
    "string-or-null": ({"anyOf": [{"type": "string"}, {"type": "null"}]}, st.none() | SAFE_TEXT),
}


@st.composite
def tool_and_call(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    # Small on purpose: every token is a decode step, and tp2 on two CPU cores decodes at ~20 ms a token.
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True), min_size=0, max_size=3, unique=True))
    properties, args = {}, {}
    for name in names:
        schema, values = VALUE_TYPES[draw(st.sampled_from(sorted(VALUE_TYPES)))]
        properties[name] = schema
        args[name] = draw(values)
    return Tool("fuzz_tool", properties).schema(), args


def typed_call(**args: tuple[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fuzz_tool call whose arguments are `name=(value type, value)`, each declared with VALUE_TYPES' schema."""
    return Tool("fuzz_tool", {k: VALUE_TYPES[t][0] for k, (t, _) in args.items()}).schema(), {k: v for k, (_, v) in args.items()}


#: Every value type alone (the union both null and a string), then several in one call: the draw the check
#: sends first on every profile and plan. Without it the smallest budgets were a pass on nothing: one draw,
#: and Hypothesis's first draw is its simplest, EXAMPLES_PER_DRAW calls of a tool without parameters.
COVERING_DRAW: list[tuple[dict[str, Any], dict[str, Any]]] = [
    typed_call(text=("string", "Zürich, 7 days")),
    typed_call(count=("integer", -1234567)),
    typed_call(score=("number", 2.5)),
    typed_call(flag=("boolean", True)),
    typed_call(items=("int-array", [3, -1, 2])),
    typed_call(tags=("str-array", ["a", "b c"])),
    typed_call(meta=("object", {"a": 1, "b": False, "c": None})),
    typed_call(maybe=("string-or-null", None)),
    typed_call(maybe=("string-or-null", "x y")),
    typed_call(text=("string", "t"), count=("integer", 42), score=("number", -0.75), flag=("boolean", False),
               items=("int-array", [7]), tags=("str-array", ["q"]), meta=("object", {"b": True}), maybe=("string-or-null", None)),
    typed_call(text=("string", "Oslo"), count=("integer", 3)),
]  # fmt: skip

#: Generated examples per Hypothesis draw: they go to the server together (pytest_glm45.clients.batch).
EXAMPLES_PER_DRAW = 20


def property_cases(drawn: list[tuple[dict[str, Any], dict[str, Any]]], fmt: str) -> list[Case]:
    """One draw's (tool, arguments) pairs as the cases the check replays, written in `fmt`."""
    return [Case(f"property-{i}", render_call("fuzz_tool", args, fmt), [("fuzz_tool", args)], tools=[tool], format=fmt)
            for i, (tool, args) in enumerate(drawn)]  # fmt: skip


def round_trip_draws(examples: int, fmt: str, check: Callable[[list[Case]], None], parent: settings | None = None) -> None:
    """Hand `check` each draw's cases: COVERING_DRAW first, then the `examples` generated examples (at least
    one draw of EXAMPLES_PER_DRAW), under Hypothesis's settings (`parent`, else its current profile)."""
    draws = max(1, -(-examples // EXAMPLES_PER_DRAW))

    @settings(parent, max_examples=draws, phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @example(COVERING_DRAW)
    @given(st.lists(tool_and_call(), min_size=EXAMPLES_PER_DRAW, max_size=EXAMPLES_PER_DRAW))
    def round_trip(drawn: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        check(property_cases(drawn, fmt))

    round_trip()


@pytest.mark.parametrize("fmt", STYLES)
def test_random_tools_and_arguments_round_trip(glm45_server: Any, glm45_batch: Checks, glm45_replay: Replayer,
                                                glm45_examples: Callable[[int], int], fmt: str, record_property: Any) -> None:  # fmt: skip
    """Random schemas and values, rendered as GLM writes them in `fmt`, parse back to the same typed values.

    Both formats on every server (the model's own is recorded as `glm45_own_format`). COVERING_DRAW (every
    value type, alone and together) on every profile and plan, then the profile's example count (a share
    of it on a model's other parallel plans: see glm45_examples), drawn EXAMPLES_PER_DRAW at a time and
    sent together, each streamed and not; a failure names the example that broke (its script and a curl
    line). Examples are not shrunk: every one is a batch of requests, and the failing one is named whole.
    """
    record_property("glm45_format", fmt)
    record_property("glm45_own_format", model_own_format(glm45_server))

    def check(cases: list[Case]) -> None:
        jobs = [(lambda c=case, s=stream: replay_case(glm45_replay, c, stream=s)) for case in cases for stream in (False, True)]
        outcomes = glm45_batch.run_all(jobs)
        for i, case in enumerate(cases):
            note(f"example {i}: replay by hand: " + curl_line(glm45_replay.client.base_url, request_body(case, glm45_replay)))
            plain, streamed = outcomes[2 * i].get(), outcomes[2 * i + 1].get()
            check_expected(case, plain, glm45_replay)
            problems = protocol_violations(streamed.raw, "auto")
            assert not problems, problems
            assert streamed.essence() == plain.essence(), explain(case, streamed, glm45_replay)
            check_conserved(case, streamed, glm45_replay)

    round_trip_draws(glm45_examples(settings.default.max_examples), fmt, check)

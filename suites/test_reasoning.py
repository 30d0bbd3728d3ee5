"""Reasoning: vLLM's glm45 reasoning parser splits <think>...</think> from the answer, streamed and not.

Every replay case runs twice: `plain` checks the non-streamed answer; `stream` checks the
streamed one against the same expectation and against the non-streamed one, field by field.

Whitespace next to a tag is formatting, not text: GLM-4.5 writes `</think>\n` before its answer
and its own chat template strips both fields when it renders them back. So a field is compared
to its expectation with the whitespace at its ends stripped; streamed and non-streamed answers
must still agree exactly, so a server that strips in one mode and not the other is caught.

Cases with a tool call run in both tool-call formats, ids ending `-native` (GLM-4.5/4.6) or
`-compact` (GLM-4.7). Cases ending `-as-text` spell their `</think>` (or `<think>`, `<tool_call>`)
as ordinary text pieces instead of the added token (replay's as-text xarg).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from pytest_glm45.clients.answers import REASONING_FIELDS, ChatResult, markup_leaks, protocol_violations
from pytest_glm45.clients.batch import Checks
from pytest_glm45.clients.chat import ChatClient, HttpError, Replayer
from pytest_glm45.clients.conservation import assert_replay_conserved
from pytest_glm45.clients.surfaces import assert_chat_schema
from pytest_glm45.glm.glm_format import (
    SPECIAL_TOKENS,
    STYLES,
    THINK_CLOSE,
    THINK_OPEN,
    THINK_TAGS,
    render_call,
)
from pytest_glm45.glm.replay import as_text_xargs, replayed_script
from pytest_glm45.glm.toolcall import WEATHER as WEATHER_TOOL

WEATHER = WEATHER_TOOL.schema()
THINKING_OFF = {"enable_thinking": False}
TAGS = THINK_TAGS


@dataclass(frozen=True)
class Case:
    """A scripted output and where its parts must land."""

    id: str
    script: str
    reasoning: str | None
    content: str | None
    thinking: bool = True
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()
    max_tokens: int = 2048
    finish: str | None = None  # default: tool_calls when calls, else stop
    user: str = "Go ahead."
    #: For outputs the format leaves open: the pieces of text that must survive somewhere (nothing the
    #: model wrote is lost); `calls` may then parse or stay as their text in the reasoning.
    keep: tuple[str, ...] = ()
    #: The tool-call format of the script's calls ("native" or "compact"); None for a case without a call.
    format: str | None = None
    #: Markup the script spells as ordinary text pieces instead of its added token (replay's as-text xarg).
    as_text: tuple[str, ...] = ()


def axis(case_id: str, make: Callable[[str], Case]) -> list[Case]:
    """A case with a call, in both formats: ids `<case_id>-native` and `<case_id>-compact`."""
    return [replace(make(style), id=f"{case_id}-{style}", format=style) for style in STYLES]


X_CALL = ("get_weather", {"city": "X"})
PARIS_CALL = ("get_weather", {"city": "Paris"})
LONG = "step " * 120
CASES = [
    # thinking on: reasoning in its field, the answer in content, no tag in either
    Case("basic", "<think>Let me think.</think>The answer is 4.", "Let me think.", "The answer is 4."),
    Case("newline-after-close", "<think>Let me think.</think>\nThe answer is 4.", "Let me think.", "The answer is 4."),
    Case("newlines-inside-tags", "<think>\nFirst.\nSecond.\n</think>Answer.", "\nFirst.\nSecond.\n", "Answer."),
    Case("multiline-answer", "<think>R</think>Line 1\nLine 2\n\nLine 4", "R", "Line 1\nLine 2\n\nLine 4"),
    Case("unicode-and-emoji", "<think>Überlegung 🤔 東京</think>Réponse ✅", "Überlegung 🤔 東京", "Réponse ✅"),
    Case("markup-in-both", "<think>Is <b>x</b> < y?</think>Yes: <i>x</i> > 0", "Is <b>x</b> < y?", "Yes: <i>x</i> > 0"),
    Case("long-reasoning", f"<think>{LONG}</think>Done.", LONG, "Done."),
    Case("reasoning-only", "<think>Nothing to say.</think>", "Nothing to say.", None),
    # thinking off
    Case("thinking-off", "Just the answer.", None, "Just the answer.", thinking=False),
    Case("thinking-off-multiline", "Line A\nLine B", None, "Line A\nLine B", thinking=False),
    Case("nothink-typed-by-user", "<think></think>Short answer.", None, "Short answer.", user="Quick one /nothink"),
    # empty blocks, missing tags, truncation
    Case("empty-think-block", "<think></think>Answer.", None, "Answer."),
    Case("empty-think-block-newline", "<think></think>\nAnswer.", None, "Answer."),
    Case("no-tags-at-all", "A plain answer without thinking.", None, "A plain answer without thinking."),
    # Cut by max_tokens: the text so far is a non-empty prefix of what was scripted, in the pinned field.
    Case("open-tag-cut-by-max-tokens", "<think>" + "thinking " * 50, "thinking " * 50, None, max_tokens=6, finish="length"),
    Case("answer-cut-by-max-tokens", "<think>R</think>" + "word " * 50, "R", "word " * 50, max_tokens=8, finish="length"),
    # reasoning and tool calls
    *axis("reasoning-then-tool-call", lambda style: Case("", "<think>Need the tool.</think>" + render_call(*PARIS_CALL, style),
                                                         "Need the tool.", None, calls=(PARIS_CALL,))),
    # GLM-4.5 does not call tools while thinking; if a model does, the call may parse or stay as text in the
    # reasoning, but the text after it is still the model's: " no." stays in the reasoning or content, and
    # "Answer." (after </think>) is the answer. GLM-4.7 is seen doing it (anomalyco/opencode#6883).
    *axis("tool-call-inside-think", lambda style: Case("", "<think>Maybe " + render_call(*X_CALL, style) + " no.</think>Answer.",
                                                       "Maybe ", "Answer.", calls=(X_CALL,), keep=("Maybe", " no.", "Answer."))),
    # A call emitted before the think block is closed (no </think> at all): the call parses or stays as text,
    # and the reasoning before it is kept (anomalyco/opencode#6883; lmstudio-ai/lmstudio-bug-tracker#1592).
    *axis("call-before-think-closed", lambda style: Case("", "<think>Need the weather." + render_call(*X_CALL, style),
                                                         "Need the weather.", None, calls=(X_CALL,), keep=("Need the weather.",))),
    # </think> (and <think>) spelled as ordinary text pieces instead of the added token: the same characters, so
    # a server may split there as at the token, or keep the model's text as written; never lose it, and agree
    # streamed and not (a parser that matches the token id in one mode and the text in the other splits them
    # differently). A call after a real </think> with <tool_call> as text parses or comes back as its text
    # (vllm-project/vllm#58105).
    Case("close-think-as-text", "<think>Let me think.</think>The answer is 4.", "Let me think.", "The answer is 4.",
         as_text=(THINK_CLOSE,)),
    Case("think-tags-as-text", "<think>Let me think.</think>The answer is 4.", "Let me think.", "The answer is 4.",
         as_text=THINK_TAGS),
    *axis("reasoning-then-call-as-text", lambda style: Case("", "<think>Need the tool.</think>" + render_call(*PARIS_CALL, style),
                                                            "Need the tool.", None, calls=(PARIS_CALL,), as_text=("<tool_call>", "</tool_call>"))),
    # lookalikes stay where they belong
    Case("thinking-lookalike-in-answer", "<think>R</think>Use <thinking> tags.", "R", "Use <thinking> tags."),
    Case("spaced-close-in-reasoning", "<think>a </ think> b</think>A", "a </ think> b", "A"),
    Case("open-tag-fragment-in-answer", "<think>R</think>The <think token is odd.", "R", "The <think token is odd."),
    Case("close-fragment-in-reasoning", "<think>ends with </thin and </think>A", "ends with </thin and ", "A"),
    Case("tool-call-fragment-in-reasoning", "<think>write <tool_call without closing</think>A", "write <tool_call without closing", "A"),
    Case("json-in-answer", '<think>R</think>{"a": [1, 2], "b": "<x>"}', "R", '{"a": [1, 2], "b": "<x>"}'),
    Case("angle-brackets-everywhere", "<think><<>> </></think><<>>", "<<>> </>", "<<>>"),
]
assert len({c.id for c in CASES}) == len(CASES)


def case_params(cases: list[Case]) -> list[Any]:
    """The cases as parameters: one without a call sends no tools, so tool-calling strictness cannot change
    its answer (`glm45_no_tools`: it runs on the strict twin only)."""
    return [pytest.param(c, id=c.id, marks=[] if c.calls else [pytest.mark.glm45_no_tools]) for c in cases]


def fields(case: Case) -> dict[str, Any]:
    out: dict[str, Any] = {"max_tokens": case.max_tokens}
    if not case.thinking:
        out["chat_template_kwargs"] = THINKING_OFF
    if case.calls:
        out["tools"] = [WEATHER]
    if case.as_text:
        out["vllm_xargs"] = as_text_xargs(case.as_text)
    return out


def run(replay: Replayer, case: Case, stream: bool) -> ChatResult:
    try:
        return replay.chat(case.script, [{"role": "user", "content": case.user}], stream=stream, **fields(case))
    except HttpError as exc:
        pytest.fail(f"HTTP {exc.status}: {exc.message}\nscript: {case.script!r}", pytrace=False)


def describe(case: Case, result: ChatResult) -> str:
    return (
        f"\nscript:   {case.script[:300]!r}"
        + (f" (spelled: {' '.join(case.as_text)} as ordinary text pieces)" if case.as_text else "")
        + (f" ({case.format} tool-call format)" if case.format else "")
        + f"\nexpected: reasoning={case.reasoning!r} content={case.content!r}"
        f"\ngot:      reasoning={result.reasoning!r} content={result.content!r} "
        f"calls={[(c.name, c.arguments) for c in result.tool_calls]} finish={result.finish_reason!r} "
        f"(field {result.reasoning_field!r}, {'stream' if result.stream else 'plain'})"
    )


def same_or_cut(got: str | None, expected: str | None, cut: bool) -> bool:
    """Equal up to whitespace at the ends, or for a response cut by max_tokens a non-empty
    prefix; None (the field absent) equals only None."""
    if expected is None or got is None:
        return got == expected
    if cut:
        return got.strip() != "" and expected.startswith(got.rstrip())
    return got.strip() == expected.strip()


def check_nothing_lost(case: Case, result: ChatResult) -> None:
    """An output the format leaves open: each kept piece survives, the calls parse or stay as text, and
    the finish reason agrees with what parsed."""
    why = describe(case, result)
    said = (result.reasoning or "") + (result.content or "")
    lost = [piece for piece in case.keep if piece not in said]
    assert not lost, f"text the model wrote was lost: {lost}" + why
    parsed = result.calls()
    if parsed:
        assert parsed == list(case.calls), "tool calls differ" + why
    else:
        missing = [name for name, args in case.calls if render_call(name, args, case.format or "compact") not in said]
        assert not missing, f"calls {missing} neither parsed nor kept as text" + why
    assert case.content is None or (result.content or "").strip().endswith(case.content), "the answer is not in content" + why
    for tag in TAGS:
        assert tag not in (result.reasoning or "") and tag not in (result.content or ""), f"{tag} leaked" + why
    assert result.finish_reason == ("tool_calls" if parsed else "stop"), "finish_reason" + why


def check_as_text(case: Case, result: ChatResult) -> None:
    """Markup spelled as text: the split the tag means, or the model's text kept as written (an opening
    <think> written as its token may be consumed); a call after a real </think> parses or is its text."""
    why = describe(case, result)
    if case.calls:
        assert same_or_cut(result.reasoning, case.reasoning, False), "reasoning differs" + why
        text = case.script.split(THINK_CLOSE, 1)[1]
        parsed = result.calls()
        if parsed:
            assert parsed == list(case.calls) and not (result.content or "").strip(), "tool calls differ" + why
        else:
            assert (result.content or "").strip() == text.strip(), "the call neither parsed nor came back as its text" + why
        assert result.finish_reason == ("tool_calls" if parsed else "stop"), "finish_reason" + why
        return
    split = same_or_cut(result.reasoning, case.reasoning, False) and same_or_cut(result.content, case.content, False)
    said = ((result.reasoning or "") + (result.content or "")).strip()
    kept = said in (case.script.strip(), case.script.removeprefix(THINK_OPEN).strip())
    assert split or kept, ("neither split at the tag nor kept as the model wrote it (text lost or moved)" + why)
    assert result.calls() == [] and result.finish_reason == "stop", "finish_reason" + why


def check(case: Case, result: ChatResult) -> None:
    if case.as_text:
        check_as_text(case, result)
        return
    if case.keep:
        check_nothing_lost(case, result)
        return
    why = describe(case, result)
    cut = case.finish == "length"
    assert same_or_cut(result.reasoning, case.reasoning, cut), "reasoning differs" + why
    assert same_or_cut(result.content, case.content, cut and case.reasoning is not None and case.content is not None
                       and result.reasoning == case.reasoning), "content differs" + why  # fmt: skip
    for tag in TAGS:
        assert tag not in (result.reasoning or "") and tag not in (result.content or ""), f"{tag} leaked" + why
    assert not markup_leaks(result), "markup in content" + why
    assert result.calls() == list(case.calls), "tool calls differ" + why
    expected_finish = case.finish or ("tool_calls" if case.calls else "stop")
    assert result.finish_reason == expected_finish, "finish_reason" + why
    if result.reasoning_field is not None:
        assert result.reasoning_field in REASONING_FIELDS


def check_conserved(case: Case, result: ChatResult, replay: Replayer, script: str | None = None) -> None:
    """Conservation (pytest_glm45.clients.conservation): the answer accounts for every token of the script.
    `script`: what the replay processor got, when not the Replayer's rendering of the case's."""
    written = replayed_script(case.script, replay.opens_think, case.thinking) if script is None else script
    assert_replay_conserved(replay.client, written, fields(case), result, replay.opens_think, case.format)


def replay_job(replay: Replayer, params: Mapping[str, Any]) -> ChatResult:
    """One case's request, streamed or not: what the batch sends for a `test_replay` item."""
    return run(replay, params["case"], stream=params["mode"] == "stream")


@pytest.mark.glm45_twin(mode="plain")
@pytest.mark.glm45_parser_case
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("case", case_params(CASES))
def test_replay(glm45_batch: Checks, glm45_replay: Replayer, glm45_server: Any, case: Case, mode: str, record_property: Any) -> None:
    """Each case's answer comes from its configuration's batch (every case, both modes, sent together).
    A case with a call records its format and the model's own (`glm45_format`, `glm45_own_format`).
    The answer (every chunk, streamed) must also validate against the openai SDK's types."""
    if case.format:
        record_property("glm45_format", case.format)
        record_property("glm45_own_format", glm45_server.own_format)
    result = glm45_batch.answer(replay_job)
    if mode == "plain":
        record_property("reasoning_field", result.reasoning_field)
        check(case, result)
        check_conserved(case, result, glm45_replay)
        assert_chat_schema(result, stream=False)
        return
    choice = "auto" if case.calls else None
    problems = [p for p in protocol_violations(result.raw, choice) if "finish_reason" not in p or case.calls]
    if case.as_text and case.calls and not result.calls():
        # A call spelled with text tags may come back as its text (check_as_text holds it to the script): its tags are that text.
        problems = [p for p in problems if "leaked into content" not in p]
    assert not problems, "streaming protocol broken:\n  " + "\n  ".join(problems) + describe(case, result)
    check(case, result)
    check_conserved(case, result, glm45_replay)
    plain = glm45_batch.answer(replay_job, {"case": case, "mode": "plain"})
    assert (result.reasoning, result.content) == (plain.reasoning, plain.content), (
        "streamed and non-streamed split differently" + describe(case, result) + describe(case, plain)
    )
    assert_chat_schema(result, stream=True)


# -- the field name, and reasoning token counts ------------------------------------------


def test_reasoning_field_name_is_one_of_the_known_names(glm45_replay: Replayer, record_property: Any) -> None:
    """vLLM 0.32 says `reasoning`, older versions `reasoning_content`: accept either, record which."""
    plain = glm45_replay.chat("<think>R</think>A")
    streamed = glm45_replay.chat("<think>R</think>A", stream=True)
    for answer in (plain, streamed):
        assert_replay_conserved(glm45_replay.client, replayed_script("<think>R</think>A", glm45_replay.opens_think, True), {}, answer,
                                glm45_replay.opens_think)  # fmt: skip
    record_property("reasoning_field", plain.reasoning_field)
    assert plain.reasoning_field in REASONING_FIELDS
    assert streamed.reasoning_field == plain.reasoning_field, "the streamed field name differs from the non-streamed one"


@pytest.mark.parametrize("mode", ["plain", "stream"])
def test_reasoning_tokens_match_the_reasoning_text(glm45_replay: Replayer, glm45_chat: ChatClient, mode: str) -> None:
    reasoning = "Count these words one by one, carefully."
    result = glm45_replay.chat(f"<think>{reasoning}</think>Done.", stream=mode == "stream")
    written = replayed_script(f"<think>{reasoning}</think>Done.", glm45_replay.opens_think, True)
    assert_replay_conserved(glm45_replay.client, written, {}, result, glm45_replay.opens_think)
    details = (result.usage or {}).get("completion_tokens_details") or {}
    assert "reasoning_tokens" in details, f"usage has no completion_tokens_details.reasoning_tokens: {result.usage}"
    text_tokens = glm45_chat.count_tokens(reasoning)
    # The tags are one token each; a server may count them with the reasoning or not.
    assert details["reasoning_tokens"] in (text_tokens, text_tokens + 1, text_tokens + 2), (
        f"reasoning_tokens {details['reasoning_tokens']} for a reasoning text of {text_tokens} tokens"
    )


# -- multi-turn ---------------------------------------------------------------------------


def test_rendered_prompt_keeps_reasoning_only_after_the_last_user_turn(glm45_chat: ChatClient) -> None:
    messages = [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1", "reasoning": "OLD-THOUGHT-1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": None, "reasoning": "NEW-THOUGHT-2", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    rendered = "".join(glm45_chat.tokenize_chat(messages, tools=[WEATHER], add_generation_prompt=True)["token_strs"])
    assert "OLD-THOUGHT-1" not in rendered, "reasoning before the last user turn must be dropped"
    assert "NEW-THOUGHT-2" in rendered, "reasoning after the last user turn must be kept"


def test_third_turn_of_an_agent_loop_has_no_tags_in_content(glm45_replay: Replayer) -> None:
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "reasoning": "Call the tool.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21 C"},
    ]  # fmt: skip
    for stream in (False, True):
        script = "<think>The tool says sunny.</think>It is sunny in Oslo."
        result = glm45_replay.chat(script, messages, stream=stream, tools=[WEATHER])
        assert (result.reasoning, result.content) == ("The tool says sunny.", "It is sunny in Oslo."), describe(
            Case("loop", "", "The tool says sunny.", "It is sunny in Oslo."), result
        )
        written = replayed_script(script, glm45_replay.opens_think, True)
        assert_replay_conserved(glm45_replay.client, written, {"tools": [WEATHER]}, result, glm45_replay.opens_think)


# -- property-based -----------------------------------------------------------------------

NEAR_TAGS = st.sampled_from(["<", ">", "</", "<thin", "think>", "</ think>", "<think", "/think", "<b>", "&lt;", "\n", " "])
TEXT = st.lists(st.text(max_size=6) | NEAR_TAGS, min_size=1, max_size=4).map("".join).filter(
    # Whitespace at the edges is checked by the dedicated cases above; the tokens themselves cannot be text.
    lambda s: s == s.strip() and s != "" and not any(tok in s for tok in SPECIAL_TOKENS)
)


#: Generated examples per Hypothesis draw: they go to the server together (pytest_glm45.clients.batch).
EXAMPLES_PER_DRAW = 8


def test_random_reasoning_and_answers_round_trip(glm45_batch: Checks, glm45_replay: Replayer,
                                                  glm45_examples: Callable[[int], int]) -> None:  # fmt: skip
    """Half the profile's examples (50 in standard; a share of that on a model's other parallel plans),
    drawn EXAMPLES_PER_DRAW at a time and sent together, each streamed and not."""
    draws = max(1, -(-glm45_examples(max(10, settings.default.max_examples // 2)) // EXAMPLES_PER_DRAW))

    @settings(max_examples=draws)
    @given(st.lists(st.tuples(TEXT, TEXT), min_size=EXAMPLES_PER_DRAW, max_size=EXAMPLES_PER_DRAW))
    def round_trip(drawn: list[tuple[str, str]]) -> None:
        scripts = [f"<think>{reasoning}</think>{answer}" for reasoning, answer in drawn]
        jobs = [(lambda sc=script, s=stream: glm45_replay.chat(sc, stream=s)) for script in scripts for stream in (False, True)]
        outcomes = glm45_batch.run_all(jobs)
        for i, (reasoning, answer) in enumerate(drawn):
            note(f"example {i}: replayed script: {scripts[i]!r}")
            plain, streamed = outcomes[2 * i].get(), outcomes[2 * i + 1].get()
            assert (plain.reasoning, plain.content) == (reasoning, answer)
            assert (streamed.reasoning, streamed.content) == (reasoning, answer)
            for got in (plain, streamed):
                written = replayed_script(scripts[i], glm45_replay.opens_think, True)
                assert_replay_conserved(glm45_replay.client, written, {}, got, glm45_replay.opens_think)


# -- live, real weights only -------------------------------------------------------------


@pytest.mark.glm45_live
def test_live_thinking_yields_reasoning_and_a_correct_answer(glm45_chat: ChatClient) -> None:
    result = glm45_chat.chat([{"role": "user", "content": "A bat and a ball cost 1.10 in total. The bat costs 1.00 more than the ball. "
                               "How much does the ball cost? Answer with the number only."}], max_tokens=8192, temperature=0)  # fmt: skip
    assert result.reasoning and result.reasoning.strip()
    assert "0.05" in (result.content or "") or "0,05" in (result.content or "")
    assert not any(tag in (result.content or "") for tag in TAGS)


@pytest.mark.glm45_live
def test_live_thinking_off_yields_no_reasoning(glm45_chat: ChatClient) -> None:
    result = glm45_chat.chat([{"role": "user", "content": "What is 7 times 6? Number only."}], max_tokens=256, temperature=0,
                             chat_template_kwargs=THINKING_OFF)  # fmt: skip
    assert not result.reasoning
    assert "42" in (result.content or "")


@pytest.mark.glm45_live
def test_live_tool_loop_ends_without_tags_in_content(glm45_chat: ChatClient) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What's the weather in Oslo? Use the tool, then answer in one sentence."}]
    first = glm45_chat.chat(messages, tools=[WEATHER], max_tokens=4096, temperature=0)
    assert first.tool_calls, f"the model did not call the tool: {first.content!r}"
    messages.append({"role": "assistant", "content": first.content, "reasoning": first.reasoning,
                     "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                                    for c in first.tool_calls]})  # fmt: skip
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny, 21 C"} for c in first.tool_calls]
    final = glm45_chat.chat(messages, tools=[WEATHER], max_tokens=4096, temperature=0)
    assert final.content and not any(tag in final.content for tag in TAGS) and not markup_leaks(final)

"""Conservation (pytest_glm45.clients.conservation): the rule on fixed answers, no server.

What it must catch (a dropped word of content or reasoning, a lost, invented or duplicated call, a call
parsed or dropped under tool_choice none, a wrong usage count), what it must accept (the transforms the
format allows), and, for every replay case of the tool-calling and reasoning suites, that an answer
which drops one word of the script fails that case's check.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pytest_glm45.clients.answers import ChatResult
from pytest_glm45.clients.chat import ChatClient, Replayer
from pytest_glm45.clients.conservation import (
    ParseMode,
    ScriptTokens,
    assert_conserved,
    conservation_problems,
    parse_mode,
    pieces,
)
from pytest_glm45.glm.glm_format import THINK_CLOSE, THINK_OPEN, render_call
from pytest_glm45.glm.toolcall import ToolCall
from suite_modules import suite_module

TOOLS = suite_module("test_tool_calling")
REASONING = suite_module("test_reasoning")
PARIS = ("get_weather", {"city": "Paris", "days": 3})
AUTO = ParseMode(tools=True, tool_choice="auto", thinking=False)
NONE = ParseMode(tools=True, tool_choice="none", thinking=False)
NO_TOOLS = ParseMode(tools=False, thinking=False)
THINKING = ParseMode(tools=True, tool_choice="auto", thinking=True)


def answer(content: str | None = None, reasoning: str | None = None, calls: list[tuple[str, Any]] | tuple[Any, ...] = (),
           finish: str | None = None, tokens: int | None = None) -> ChatResult:  # fmt: skip
    """A fixed answer as the kit reads one."""
    tool_calls = [ToolCall(i, f"call_{i}", n, json.dumps(a), "function") for i, (n, a) in enumerate(calls)]
    usage = None if tokens is None else {"completion_tokens": tokens}
    return ChatResult(content, reasoning, "reasoning" if reasoning else None, tool_calls, finish or ("tool_calls" if calls else "stop"),
                      usage, False)  # fmt: skip


# -- the two defects ---------------------------------------------------------------------


@pytest.mark.parametrize("style", ["native", "compact"])
def test_tool_choice_none_losing_the_call_text_is_caught(style: str) -> None:
    """Issue 28: tool_choice none, `Sure. ` then a call; vLLM returns `Sure. ` and drops the call's text."""
    script = "Sure. " + render_call(*PARIS, style)
    for mode in (NONE, NO_TOOLS):
        problems = conservation_problems(script, answer("Sure. ", tokens=31), mode, {30}, style)
        assert len(problems) == 1 and problems[0].startswith("conservation: lost:") and "<tool_call>get_weather" in problems[0], problems
        assert conservation_problems(script, answer(script, tokens=31), mode, {30}, style) == []
        parsed = conservation_problems(script, answer("Sure.", calls=[PARIS], tokens=31), mode, {30}, style)
        assert any("lets no call be parsed" in p for p in parsed), parsed
    thinking_on = ParseMode(tools=True, tool_choice="none", thinking=True)
    assert conservation_problems(script, answer(None, "Sure."), thinking_on, None, style), "reasoning 'Sure.' and nothing else"


def test_failure_message_shows_the_script_what_came_back_and_the_missing_piece() -> None:
    script = "Sure. " + render_call(*PARIS, "native")
    with pytest.raises(AssertionError) as failed:
        assert_conserved(script, answer("Sure. ", tokens=31), NONE, {30})
    text = str(failed.value)
    assert f"script:   {script!r}" in text and "content='Sure. '" in text and "completion_tokens=31" in text
    assert "tool_choice \"none\"" in text and "lost:" in text and "allowed:" in text


# -- what it catches -------------------------------------------------------------------------------


def test_a_dropped_word_of_content_is_caught() -> None:
    script = "Let me check the weather.\n" + render_call(*PARIS, "native")
    assert conservation_problems(script, answer("Let me check the weather.", calls=[PARIS]), AUTO) == []
    problems = conservation_problems(script, answer("Let me the weather.", calls=[PARIS]), AUTO)
    assert problems == ["conservation: lost: text the model wrote came back neither as text, reasoning nor a call: ['check']"]


def test_a_dropped_word_of_reasoning_is_caught() -> None:
    script = "<think>The user wants weather.</think>" + render_call(*PARIS, "native")
    assert conservation_problems(script, answer(None, "The user wants weather.", [PARIS]), THINKING) == []
    problems = conservation_problems(script, answer(None, "The user weather.", [PARIS]), THINKING)
    assert problems and "'wants'" in problems[0], problems


def test_a_lost_call_is_caught() -> None:
    rome = ("get_weather", {"city": "Rome"})
    script = render_call(*PARIS, "native") + "\n" + render_call(*rome, "native")
    assert conservation_problems(script, answer(None, calls=[PARIS, rome]), AUTO) == []
    problems = conservation_problems(script, answer(None, calls=[PARIS]), AUTO)
    assert problems and "lost" in problems[0] and "Rome" in problems[0], problems


def test_an_invented_call_is_caught() -> None:
    script = render_call(*PARIS, "compact")
    problems = conservation_problems(script, answer(None, calls=[PARIS, ("noop", {})]), AUTO)
    assert any("never written (invented)" in p for p in problems), problems
    changed = conservation_problems(script, answer(None, calls=[("get_weather", {"city": "Pariss", "days": 3})]), AUTO)
    assert any("invented" in p for p in changed) and any("lost" in p for p in changed), changed


def test_a_duplicated_piece_is_caught() -> None:
    script = "Checking.\n" + render_call(*PARIS, "native")
    twice = conservation_problems(script, answer("Checking.", calls=[PARIS, PARIS]), AUTO)
    assert any("duplicated" in p for p in twice), twice
    both = conservation_problems(script, answer(script, calls=[PARIS]), AUTO)
    assert any(p.startswith("conservation: extra:") for p in both), both
    text_twice = conservation_problems("<think>R</think>Answer.", answer("Answer.", "R Answer."), THINKING)
    assert any("extra" in p and "Answer." in p for p in text_twice), text_twice


def test_a_wrong_usage_count_is_caught() -> None:
    script = "Just the answer."
    assert conservation_problems(script, answer(script, tokens=4), NO_TOOLS, {4}) == []
    assert conservation_problems(script, answer(script, tokens=5), NO_TOOLS, {4}) == [], "the end-of-turn token may count"
    for wrong in (3, 6, 31):
        problems = conservation_problems(script, answer(script, tokens=wrong), NO_TOOLS, {4})
        assert problems == [f"conservation: usage: {wrong} completion tokens, but the script is 4 tokens (accepted: [4, 5], "
                            "the end-of-turn token counted or not)"], problems  # fmt: skip
    responses_usage = ChatResult(script, None, None, [], "stop", {"output_tokens": 9}, False)
    assert conservation_problems(script, responses_usage, NO_TOOLS, {4}), "output_tokens (Responses, Messages) is read too"


# -- what it accepts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "returned"),
    [
        ("<think>Let me think.</think>\nThe answer is 4.", answer("The answer is 4.", "Let me think.")),
        ("<think>\nFirst.\n</think>Answer.", answer("\nAnswer.", "\nFirst.\n")),
        ("<think>R</think>A", answer("<think>R</think>A")),  # tags kept as the text they are (thinking off, as text)
        ("<think>R</think>A", answer(None, "R</think>A")),  # the whole answer left in reasoning: placement is not conservation's
        ("Let me check.\n" + render_call(*PARIS, "native"), answer("Let me check.\n", calls=[PARIS])),
        (render_call("noop", {}, "native") + "\n" + render_call(*PARIS, "native"), answer(None, calls=[("noop", {}), PARIS])),
        (render_call("get", {"key": "k", "extra": 7}, "native"), answer(None, calls=[("get", {"key": "k", "extra": "7"})])),
        (render_call("record", {"score": 1e3}, "compact"), answer(None, calls=[("record", {"score": 1000})])),
        (render_call("get_weather", {"city": "Paris"}, "compact").replace("<arg_key>", "", 1),
         answer(None, calls=[("get_weather", {"city": "Paris"})])),
        ("<think>" + "thinking " * 50, answer(None, "thinking thinking", finish="length", tokens=6)),
    ],
)
def test_allowed_transforms_are_accepted(script: str, returned: ChatResult) -> None:
    assert conservation_problems(script, returned, THINKING, {60}) == []


def test_whitespace_where_the_reasoning_meets_the_content_is_formatting() -> None:
    """A server that moves the split before a call and trims the reasoning's end loses nothing."""
    call = render_call(*PARIS, "compact")
    script = f"<think>Maybe {call} no.</think>Answer."
    assert conservation_problems(script, answer(f"{call} no.Answer.", "Maybe"), NO_TOOLS) == []
    assert conservation_problems(script, answer(" no.Answer.", "Maybe"), NO_TOOLS), "the call's text is still lost"


def test_whitespace_inside_the_text_is_the_models() -> None:
    problems = conservation_problems("Line 1\nLine 2", answer("Line 1 Line 2"), NO_TOOLS)
    assert problems and "whitespace inside the text" in problems[0], problems


def test_the_template_opening_think_is_read_as_an_open_block() -> None:
    assert [p.kind for p in pieces("R</think>A", prompt_opens_think=True)] == ["open", "text", "close", "text"]
    mode = parse_mode({"tools": [{}], "chat_template_kwargs": {}}, opens_think=True)
    assert mode.prompt_opens_think and mode.parses_calls
    assert parse_mode({}).tool_choice == "none" and not parse_mode({}).parses_calls
    assert conservation_problems("R</think>A", answer("A", "R"), mode) == []


def test_script_tokens_count_markup_written_as_text_piece_by_piece() -> None:
    class Counting(ChatClient):
        def __init__(self) -> None:
            super().__init__("http://127.0.0.1:9", None, "tiny")
            self.asked: list[str] = []

        def count_tokens(self, text: str) -> int:
            self.asked.append(text)
            return len(text)

    client = Counting()
    counts = ScriptTokens()
    assert counts.counts(client, "ab<tool_call>cd") == {15}
    assert counts.counts(client, "ab<tool_call>cd", ("<tool_call>",)) == {2 + 1 + 10 + 2, 2 + 11 + 2}
    before = len(client.asked)
    counts.counts(client, "ab<tool_call>cd")
    assert len(client.asked) == before, "counts are cached"
    client.close()


# -- every replay case: an answer that drops one word of the script fails the case's check ----------------


class _FakeClient(ChatClient):
    """No server: a token is a character (what the counts are is not the point here)."""

    def __init__(self) -> None:
        super().__init__("http://127.0.0.1:9", None, "tiny")

    def count_tokens(self, text: str) -> int:
        return len(text)


def ideal(script: str, parse: bool) -> ChatResult:
    """What a correct server returns: the think block as reasoning, every complete call parsed (when `parse`),
    the text around them as content; the calls read back from their text (string values as written)."""
    reasoning, content = None, script
    if script.startswith(THINK_OPEN):
        reasoning, _, content = script[len(THINK_OPEN):].partition(THINK_CLOSE)
    calls: list[tuple[str, Any]] = []

    def take(text: str) -> str:
        if not parse:
            return text
        for found in re.findall(r"<tool_call>.*?</tool_call>", text, re.DOTALL):
            name = re.split(r"\n|<arg_key>", found[len("<tool_call>"):], maxsplit=1)[0].removesuffix("</tool_call>")
            args = {k: v for k, v in re.findall(r"<arg_key>(.*?)</arg_key>\n?<arg_value>(.*?)</arg_value>", found, re.DOTALL)}
            calls.append((name, args))
        return re.sub(r"\n?<tool_call>.*?</tool_call>\n?", "", text, flags=re.DOTALL)

    reasoning = None if reasoning is None else take(reasoning)
    content = take(content)
    return answer(content or None, reasoning or None, calls)


def dropped_words(result: ChatResult) -> list[ChatResult]:
    """The answer once per word of its text or of a call's string value left out, and once per call and per
    argument of a call left out (a call's name and keys are words the model wrote)."""
    out = []
    for field in ("reasoning", "content"):
        text = getattr(result, field) or ""
        for m in re.finditer(r"\S+", text):
            fields = {"reasoning": result.reasoning, "content": result.content, field: text[: m.start()] + text[m.end():]}
            out.append(ChatResult(fields["content"], fields["reasoning"], None, result.tool_calls, result.finish_reason, None, False))
    for i, call in enumerate(result.tool_calls):
        args = json.loads(call.arguments)
        others = [c for c in result.tool_calls if c is not call]
        out.append(ChatResult(result.content, result.reasoning, None, others, result.finish_reason, None, False))
        for key in args:
            fewer = ToolCall(i, call.id, call.name, json.dumps({k: v for k, v in args.items() if k != key}), "function")
            out.append(ChatResult(result.content, result.reasoning, None, [*result.tool_calls[:i], fewer, *result.tool_calls[i + 1:]],
                                  result.finish_reason, None, False))  # fmt: skip
        for key, value in args.items():
            if isinstance(value, str) and value.split():
                word = value.split()[0]
                changed = [*result.tool_calls]
                changed[i] = ToolCall(i, call.id, call.name, json.dumps({**args, key: value.replace(word, "", 1)}), "function")
                out.append(ChatResult(result.content, result.reasoning, None, changed, result.finish_reason, None, False))
    return out


@pytest.mark.parametrize("case", [*TOOLS.CASES, *REASONING.CASES], ids=lambda c: c.id)
def test_an_answer_that_drops_a_word_fails_every_replay_case(case: Any) -> None:
    """For every replay case of test_tool_calling and test_reasoning (the cases test_surfaces runs too): the answer
    a correct server gives (every call parsed, and, where the case accepts it, every call returned as its text)
    is conserved, and that answer with any one word of its text or of a string argument dropped is not, in the
    case's own conservation check (`check_conserved`, what test_replay runs on every surface)."""
    suite = TOOLS if case in TOOLS.CASES else REASONING
    replay = Replayer(_FakeClient())
    if suite is TOOLS:
        expected = case.alternatives or ((tuple(case.calls), case.content),)
        candidates = [answer(content, case.reasoning, calls) for calls, content in expected]
    else:
        calls = bool(case.calls)
        candidates = [ideal(case.script, parse=calls)] + ([ideal(case.script, parse=False)] if calls else [])
        if not case.keep:
            candidates.append(answer(case.content, case.reasoning, case.calls))
    cut = suite is REASONING and case.finish == "length"
    checked = 0
    for good in candidates:
        if cut:
            continue  # a cut answer is a prefix: dropping its last words is still one (the rule's prefix test covers it)
        suite.check_conserved(case, good, replay)
        for bad in dropped_words(good):
            with pytest.raises(AssertionError, match="conservation: "):
                suite.check_conserved(case, bad, replay)
            checked += 1
    assert checked or cut or not case.script.split(), f"no word to drop in {case.script!r}"
    replay.client.close()

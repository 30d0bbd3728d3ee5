"""The suites' replay cases that `pytest-glm45 upstream` turns into parser- and grammar-level tests.

A generated test carries the case as data: the model's output (the replay script), the request (tools,
tool_choice, thinking, earlier turns) and the result GLM-4.5's format and the API contract expect, as the
kit's own suites judge it (`suites/test_tool_calling.py`, `suites/test_reasoning.py`; `tests/test_upstream.py`
holds every case here equal to the suite's case of the same id). The suites are not part of the installed
package, so the cases a known failure can name are repeated here, built with the same helpers.

Each case is JSON-shaped (it is written into the generated file as a literal):
`{"id", "suite", "script", "tools", "tool_choice", "thinking", "history", "expect"}` where `expect` is one of
`{"kind": "exact", "calls": [[name, args], ...], "content": str|None, "reasoning": str|None}`,
`{"kind": "alternatives", "accepted": [[[[name, args], ...], content], ...]}` (a server may return any) or
`{"kind": "keep", "pieces": [...], "calls": [...], "content_endswith": str, "format": str}` (nothing the model
wrote is lost; the calls parse or stay as their text) or `{"kind": "as_text", "reasoning", "content", "calls"}` (markup
spelled as text: the split the tag means, or the text as written). `as_text` lists the markup the model spelled as
ordinary text pieces instead of its added token (the kit's replay xarg `glm45_replay_as_text`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_glm45.glm.glm_format import STYLES, render_call, render_calls
from pytest_glm45.glm.toolcall import WEATHER, Tool

GET = Tool("get", {"key": {"type": "string"}}, ("key",))
NOOP = Tool("noop")
MCP = Tool("mcp__files-server__list_dir", {"path": {"type": "string"}, "recursive": {"type": "boolean"}}, ("path",))
TYPED = Tool("record", {
    "text": {"type": "string"}, "count": {"type": "integer"}, "score": {"type": "number"}, "flag": {"type": "boolean"},
    "items": {"type": "array", "items": {"type": "integer"}}, "tags": {"type": "array", "items": {"type": "string"}},
    "meta": {"type": "object", "properties": {"a": {"type": "object"}}},
    "maybe": {"anyOf": [{"type": "string"}, {"type": "null"}]}, "either": {"type": ["string", "null"]},
    "nothing": {"type": "null"},
})  # fmt: skip
#: The tools every tool-calling case declares (suites/test_tool_calling.py ALL_TOOLS).
ALL_TOOLS = [t.schema() for t in (WEATHER, GET, NOOP, MCP, TYPED)]
PARIS = ("get_weather", {"city": "Paris", "days": 3})
ROME = ("get_weather", {"city": "Rome"})
X_CALL = ("get_weather", {"city": "X"})
PARIS_CALL = ("get_weather", {"city": "Paris"})
SEARCH_HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Search the web for vLLM releases."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_s1", "type": "function", "function": {"name": "search_web", "arguments": json.dumps({"query": "vLLM releases"})}}]},
    {"role": "tool", "tool_call_id": "call_s1", "content": "vLLM 0.32.0 is out."},
]  # fmt: skip

Call = tuple[str, Mapping[str, Any]]


def _calls(calls: Sequence[Call]) -> list[list[Any]]:
    return [[name, dict(args)] for name, args in calls]


def _case(case_id: str, suite: str, script: str, expect: dict[str, Any], *, tools: list[dict[str, Any]] | None = None,
          thinking: bool = False, history: Sequence[dict[str, Any]] = (), as_text: Sequence[str] = ()) -> dict[str, Any]:  # fmt: skip
    if suite == "reasoning" and expect["kind"] == "exact":
        expect = {**expect, "strip": True}  # the reasoning suite compares its fields up to whitespace at the ends
    return {"id": case_id, "suite": suite, "script": script, "tools": ALL_TOOLS if tools is None else tools,
            "tool_choice": "auto", "thinking": thinking, "history": list(history), "as_text": list(as_text),
            "expect": expect}  # fmt: skip


def _as_text_calls(case_id: str, style: str, calls: Sequence[Call], markup: Sequence[str], before: str = "") -> dict[str, Any]:
    """Calls whose `markup` is spelled as ordinary text pieces: they parse, or come back as the text (never vanish)."""
    text = before + ("\n" if before and style == "native" else "") + render_calls(calls, style)
    accepted = [[_calls(calls), before or None], [[], text]]
    return _case(case_id, "tool_calling", text, {"kind": "alternatives", "accepted": accepted}, as_text=markup)


def _as_text_reasoning(case_id: str, script: str, reasoning: str, content: str | None, markup: Sequence[str],
                       calls: Sequence[Call] = ()) -> dict[str, Any]:  # fmt: skip
    """`</think>` (or `<think>`, `<tool_call>`) spelled as text: the split the tag means, or the model's text as written."""
    expect = {"kind": "as_text", "reasoning": reasoning, "content": content, "calls": _calls(calls)}
    return _case(case_id, "reasoning", script, expect, tools=[WEATHER.schema()] if calls else [], thinking=True, as_text=markup)


def _exact(calls: Sequence[Call], content: str | None = None, reasoning: str | None = None) -> dict[str, Any]:
    return {"kind": "exact", "calls": _calls(calls), "content": content, "reasoning": reasoning}


def _call_or_text(calls: Sequence[Call], text: str, parsed: Sequence[Sequence[Call]] = ()) -> dict[str, Any]:
    accepted = [[_calls(calls), None], *([_calls(p), None] for p in parsed), [[], text]]
    return {"kind": "alternatives", "accepted": accepted}


def _tool_cases() -> list[dict[str, Any]]:
    out = []
    for style in STYLES:
        nl = "\n" if style == "native" else ""
        out += [
            _case(f"one-call-{style}", "tool_calling", render_calls([PARIS], style), _exact([PARIS])),
            _case(f"same-tool-twice-{style}", "tool_calling", render_calls([PARIS, ROME], style), _exact([PARIS, ROME])),
            _case(f"text-before-call-{style}", "tool_calling", "Let me check." + nl + render_call(*PARIS, style),
                  _exact([PARIS], "Let me check.")),
            _case(f"undeclared-key-{style}", "tool_calling", render_calls([("get", {"key": "k", "extra": 7})], style),
                  _exact([("get", {"key": "k", "extra": 7})])),
            _case(f"unknown-name-{style}", "tool_calling", render_call("launch_rockets", {"count": 3}, style),
                  _call_or_text([("launch_rockets", {"count": 3})], render_call("launch_rockets", {"count": 3}, style),
                                [[("launch_rockets", {"count": "3"})]])),
            _case(f"tool-from-earlier-turn-{style}", "tool_calling", render_call("search_web", {"query": "vLLM 0.33"}, style),
                  _call_or_text([("search_web", {"query": "vLLM 0.33"})], render_call("search_web", {"query": "vLLM 0.33"}, style)),
                  tools=[WEATHER.schema()], history=SEARCH_HISTORY),
            _case(f"missing-first-arg-key-{style}", "tool_calling", render_call("get_weather", {"city": "Paris"}, style).replace("<arg_key>", "", 1),
                  _call_or_text([("get_weather", {"city": "Paris"})], render_call("get_weather", {"city": "Paris"}, style).replace("<arg_key>", "", 1))),
        ]  # fmt: skip
        typed = {"text": "007", "count": 5, "flag": False, "items": [1], "meta": {"a": {"b": None}}}
        out.append(_case(f"typed-values-{style}", "tool_calling", render_calls([("record", typed)], style), _exact([("record", typed)])))
        out.append(_case(f"tool-call-inside-think-{style}", "reasoning", "<think>Maybe " + render_call(*X_CALL, style) + " no.</think>Answer.",
                         {"kind": "keep", "pieces": ["Maybe", " no.", "Answer."], "calls": _calls([X_CALL]),
                          "content_endswith": "Answer.", "format": style},
                         tools=[WEATHER.schema()], thinking=True))  # fmt: skip
    for style in STYLES:
        out += [
            _as_text_calls(f"tool-call-open-as-text-{style}", style, [PARIS], ["<tool_call>"]),
            _as_text_calls(f"tool-call-tags-as-text-{style}", style, [PARIS], ["<tool_call>", "</tool_call>"]),
            _as_text_calls(f"all-call-markup-as-text-{style}", style, [PARIS],
                           ["<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>"]),
            _as_text_calls(f"text-before-call-as-text-{style}", style, [PARIS], ["<tool_call>", "</tool_call>"], before="Let me check."),
            _as_text_reasoning(f"reasoning-then-call-as-text-{style}", "<think>Need the tool.</think>" + render_call(*PARIS_CALL, style),
                               "Need the tool.", None, ["<tool_call>", "</tool_call>"], [PARIS_CALL]),
        ]  # fmt: skip
    out += [
        _as_text_reasoning("close-think-as-text", "<think>Let me think.</think>The answer is 4.", "Let me think.", "The answer is 4.", ["</think>"]),
        _as_text_reasoning("think-tags-as-text", "<think>Let me think.</think>The answer is 4.", "Let me think.", "The answer is 4.",
                           ["<think>", "</think>"]),
    ]  # fmt: skip
    for style in STYLES:  # suites/test_tool_calling.py test_tool_choice_guided: a forced call, written as GLM writes it
        for choice, tool_choice in (("required", "required"), ("named", {"type": "function", "function": {"name": "get_weather"}})):
            case = _case(f"tool-choice-{choice}-{style}", "tool_calling", render_call(*PARIS, style), _exact([PARIS]))
            out.append({**case, "tool_choice": tool_choice})
    out.append(_case("no-tags-at-all", "reasoning", "A plain answer without thinking.",
                     _exact([], "A plain answer without thinking.", None), tools=[], thinking=True))
    return out


#: Every case a generated test can carry, by the suite's case id.
CASES: dict[str, dict[str, Any]] = {c["id"]: c for c in _tool_cases()}

#: Case ids of reports written before the format axis (commit 564256d renamed them), as the case that replaced each.
RENAMED = {
    "native-format": "one-call-native",
    "native-two-calls": "same-tool-twice-native",
    "native-typed-values": "typed-values-native",
    "native-text-before-call": "text-before-call-native",
    # before the format axis a case without a format in its id was written in the compact format
    "one-call": "one-call-compact",
    "same-tool-twice": "same-tool-twice-compact",
    "text-before-call": "text-before-call-compact",
    "undeclared-key": "undeclared-key-compact",
    "unknown-name": "unknown-name-compact",
    "tool-call-inside-think": "tool-call-inside-think-compact",
}

#: The replay checks whose parameter is a case id followed by the mode (`-plain`, `-stream`), per suite.
REPLAY_CHECKS = {"test_tool_calling::test_replay": "tool_calling", "test_reasoning::test_replay": "reasoning"}


#: The guided tool_choice check: its parameter is `<choice>-<mode>-<format>` (before the format axis `<choice>-<mode>`,
#: written in the compact format).
GUIDED_CHECK = "test_tool_calling::test_tool_choice_guided"


def case_of(check_id: str) -> tuple[str, str] | None:
    """(the current case id, the mode `plain` or `stream`) a replay check id names, or None for another check
    (a check of a report older than the format axis is read under its current id: RENAMED)."""
    name, _, param = check_id.partition("[")
    if name == GUIDED_CHECK and param.endswith("]"):
        choice, mode, style = [*param[:-1].split("-"), "compact"][:3]
        return (f"tool-choice-{choice}-{style}", mode) if mode in ("plain", "stream") else None
    if name not in REPLAY_CHECKS or not param.endswith("]"):
        return None
    stem, _, mode = param[:-1].rpartition("-")
    if mode not in ("plain", "stream"):
        return None
    return RENAMED.get(stem, stem), mode


def current_check_id(check_id: str) -> str:
    """`check_id` with a renamed case's old id replaced by the current one (other ids as they are)."""
    found = case_of(check_id)
    if found is None:
        return check_id
    name = check_id.partition("[")[0]
    if name == GUIDED_CHECK:
        _, choice, style = found[0].rsplit("-", 2)
        return f"{name}[{choice}-{found[1]}-{style}]"
    return f"{name}[{found[0]}-{found[1]}]"

"""Request shapes: the fields agent clients send that tell a server not to parse, or to parse differently.

Each shape is a request as a client sends it (the OpenAI SDK's `tool_choice` none, auto, required or a
named function and `parallel_tool_calls`; the Anthropic SDK's `tool_choice` `{type: none | any | tool}`,
`disable_parallel_tool_use` and `thinking` with a budget; no `tools` at all; a tool list that changed
since an earlier turn), on the surface that client calls. Each runs the scripts where the model writes
text before a call and two calls (thinking off), and text before a call and a call inside `<think>`
(thinking on), in both tool-call formats, streamed and not.

What each answer must be comes from the API contract and from conservation
(`pytest_glm45.clients.conservation`), never from what one vLLM returns:
- a request that lets no call be parsed (`tool_choice` none, no tools) gets no call, and the call the model
  wrote comes back as its text (conservation: it may not vanish);
- a request that lets calls be parsed gets every call the model wrote after its think block as a call, the
  calls `required` or named in `tool_choice` included; a named tool choice gets only calls to that tool;
- the finish reason says whether calls came back (each answer's schema and event contract are test_surfaces's
  business, on every replay case: not judged twice here);
- whatever the shape, the answer accounts for every token the model wrote (conservation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from pytest_glm45.clients import surfaces
from pytest_glm45.clients.batch import Checks
from pytest_glm45.clients.chat import HttpError, Replayer, curl_line
from pytest_glm45.clients.conservation import assert_replay_conserved, parse_mode
from pytest_glm45.glm.glm_format import STYLES, THINK_CLOSE, render_call, render_calls
from pytest_glm45.glm.toolcall import WEATHER

TOOLS = [WEATHER.schema()]
PARIS = ("get_weather", {"city": "Paris", "days": 3})
ROME = ("get_weather", {"city": "Rome"})
NAMED = {"type": "function", "function": {"name": "get_weather"}}
#: An earlier turn that called a tool (`search_web`) the new request no longer declares.
EARLIER_TURN = (
    {"role": "user", "content": "Search the web for vLLM releases."},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_s1", "type": "function", "function": {"name": "search_web", "arguments": '{"query": "vLLM releases"}'}}]},
    {"role": "tool", "tool_call_id": "call_s1", "content": "vLLM 0.32.0 is out."},
)  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """A request shape on one surface: its fields in Chat Completions' terms, and fields in the surface's own."""

    id: str
    surface: str
    fields: dict[str, Any]
    native: dict[str, Any] = field(default_factory=dict)
    history: tuple[dict[str, Any], ...] = ()
    #: Thinking states this shape runs (Anthropic's budgeted thinking: on only).
    thinking: tuple[bool, ...] = (False, True)

    @property
    def choice(self) -> Any:
        """The tool_choice in Chat Completions' terms ("none" without tools)."""
        return parse_mode(self.fields).tool_choice


def shapes() -> list[Shape]:
    """Every shape: what the OpenAI SDK sends to /v1/chat/completions and /v1/responses, and the Anthropic SDK to /v1/messages."""
    out: list[Shape] = []
    for surface in surfaces.SURFACES:
        out += [
            Shape("none", surface, {"tools": TOOLS, "tool_choice": "none"}),
            Shape("no-tools", surface, {}),
            Shape("required", surface, {"tools": TOOLS, "tool_choice": "required"}),
            Shape("named", surface, {"tools": TOOLS, "tool_choice": NAMED}),
        ]
    out += [
        Shape("auto", "chat", {"tools": TOOLS, "tool_choice": "auto"}),
        Shape("tools-changed", "chat", {"tools": TOOLS, "tool_choice": "auto"}, history=EARLIER_TURN),
        Shape("no-parallel", "chat", {"tools": TOOLS, "tool_choice": "auto"}, {"parallel_tool_calls": False}),
        Shape("no-parallel", "responses", {"tools": TOOLS, "tool_choice": "auto"}, {"parallel_tool_calls": False}),
        Shape("no-parallel", "messages", {"tools": TOOLS}, {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}}),
        Shape("thinking-budget", "messages", {"tools": TOOLS, "tool_choice": "auto"},
              {"thinking": {"type": "enabled", "budget_tokens": 1024}}, thinking=(True,)),
    ]  # fmt: skip
    return out


SHAPES = shapes()


def script(kind: str, style: str) -> str:
    """What the model writes: `text-call` (issue 28's `Sure. ` then a call), `two-calls`, `think-call` (a call
    inside its think block, then an answer)."""
    call = render_call(*PARIS, style)
    if kind == "text-call":
        return "Sure. " + call
    if kind == "two-calls":
        return render_calls([PARIS, ROME], style)
    return "<think>Maybe " + call + f" no.{THINK_CLOSE}Answer."


#: Room for every script and for Anthropic's smallest thinking budget (1024), which must stay below max_tokens.
MAX_TOKENS = 2048
#: Scripts per thinking state: without thinking the model writes text and calls, with it a call inside <think> too.
SCRIPTS = {False: ("text-call", "two-calls"), True: ("text-call", "think-call")}
ITEMS = [(shape, thinking, kind, style) for shape in SHAPES for thinking in shape.thinking for kind in SCRIPTS[thinking] for style in STYLES]


def item_id(item: tuple[Shape, bool, str, str]) -> str:
    shape, thinking, kind, style = item
    return f"{shape.surface}-{shape.id}-thinking-{'on' if thinking else 'off'}-{kind}-{style}"


def request_fields(shape: Shape, thinking: bool) -> dict[str, Any]:
    """The shape's fields in Chat Completions' terms, thinking as asked."""
    return {**shape.fields, "max_tokens": MAX_TOKENS, "chat_template_kwargs": {"enable_thinking": thinking}}


def shape_job(replay: Replayer, params: Mapping[str, Any]) -> surfaces.SurfaceAnswer:
    """One shape's request with one script, streamed or not: what the batch sends for an item."""
    shape, thinking, kind, style = params["item"]
    fields = request_fields(shape, thinking)
    xargs = {"glm45_replay": script(kind, style)}
    messages = [*shape.history, {"role": "user", "content": "Weather in Paris and Rome?"}]
    try:
        return surfaces.call(replay.client, shape.surface, messages, stream=params["mode"] == "stream", native=shape.native,
                             vllm_xargs=xargs, **fields)  # fmt: skip
    except httpx.HTTPError as exc:
        raise HttpError(0, {"error": {"message": f"the server broke off: {type(exc).__name__}: {exc}"}}, surfaces.PATHS[shape.surface]) from exc


def contract_problems(shape: Shape, kind: str, style: str, got: Any) -> list[str]:
    """What the API contract says of this shape's answer (conservation aside)."""
    result = got.result
    calls = result.calls()
    problems: list[str] = []
    mode = parse_mode(shape.fields)
    written_after_think = script(kind, style).rpartition(THINK_CLOSE)[2]
    expected_calls = [c for c in (PARIS, ROME) if render_call(*c, style) in written_after_think]
    if not mode.parses_calls:
        if calls:
            problems.append(f"tool_choice {shape.choice!r}: calls came back though the request lets none be parsed: {calls}")
    elif calls[len(calls) - len(expected_calls):] != expected_calls:
        problems.append(f"tool_choice {shape.choice!r}: the calls written after the think block, {expected_calls}, did not come back as calls: {calls}")
    if shape.choice == NAMED and any(name != "get_weather" for name, _ in calls):
        problems.append(f"a named tool choice (get_weather) got calls to other tools: {calls}")
    finishes = ("tool_calls", "stop") if calls and shape.choice == NAMED and shape.surface == "chat" else ("tool_calls" if calls else "stop",)
    if result.finish_reason not in finishes:
        problems.append(f"finish reason {result.finish_reason!r} with {len(calls)} call(s); accepted: {finishes}")
    return problems


@pytest.mark.glm45_twin(mode="plain")
@pytest.mark.glm45_parser_case
@pytest.mark.parametrize("mode", ["plain", "stream"])
@pytest.mark.parametrize("item", ITEMS, ids=[item_id(i) for i in ITEMS])
def test_shape(glm45_batch: Checks, glm45_replay: Replayer, item: tuple[Shape, bool, str, str], mode: str) -> None:
    """The shape's request with the script: the API contract's answer, and conservation, streamed and not."""
    shape, thinking, kind, style = item
    written = script(kind, style)
    try:
        got = glm45_batch.answer(shape_job)
    except HttpError as exc:
        if exc.status == 404 and "Not Found" in exc.message:
            pytest.skip(f"this vLLM does not serve {surfaces.PATHS[shape.surface]} (HTTP 404 Not Found)")
        status = f"HTTP {exc.status}: " if exc.status else ""  # 0: the server broke the stream off
        pytest.fail(f"{shape.surface} {shape.id} ({mode}): {status}{exc.message}\nscript: {written!r}", pytrace=False)
    failures = contract_problems(shape, kind, style, got)
    try:
        assert_replay_conserved(glm45_replay.client, written, request_fields(shape, thinking), got.result, glm45_replay.opens_think, style)
    except AssertionError as exc:
        failures.append(str(exc))
    if failures:
        result = got.result
        pytest.fail(f"{shape.surface} {shape.id}, thinking {'on' if thinking else 'off'} ({mode}):\n  " + "\n  ".join(failures)
                    + f"\nscript: {written!r}\ngot: reasoning={result.reasoning!r} content={result.content!r} calls={result.calls()} "
                    f"finish={result.finish_reason!r}\nrequest by hand: {curl_line(glm45_replay.client.base_url, got.body, surfaces.PATHS[shape.surface])}",
                    pytrace=False)  # fmt: skip

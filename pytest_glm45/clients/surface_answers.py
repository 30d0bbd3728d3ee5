"""Each surface's answer assembly: a Responses or Messages body, or its stream of events, in the kit's terms
(`ChatResult`), with every way the event sequence breaks that API's streaming contract.

`pytest_glm45.clients.surfaces` holds the requests, the transport and one call on any surface; it imports this
module, never the other way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pytest_glm45.clients import schemas
from pytest_glm45.clients.answers import ChatResult
from pytest_glm45.glm.toolcall import ToolCall
from pytest_glm45.records.error_events import error_event

#: The surfaces, by the name check ids carry.


@dataclass(frozen=True)
class Event:
    """One server-sent event: its `event:` name (None when the line is absent) and its JSON data."""

    name: str | None
    data: dict[str, Any]


# -- non-streamed answers -----------------------------------------------------------------------


def _nonempty(parts: list[str]) -> str | None:
    """Joined text; None when nothing was said (a surface has no null, only blocks or none)."""
    text = "".join(parts)
    return text or None


def from_responses(body: dict[str, Any]) -> ChatResult:
    """A Responses answer as a ChatResult: `message` text as content, `reasoning` items as reasoning,
    `function_call` items as calls; the finish reason from the calls and `incomplete_details`."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for item in body.get("output") or []:
        kind = item.get("type")
        if kind == "message":
            content += [p.get("text") or "" for p in item.get("content") or [] if p.get("type") == "output_text"]
        elif kind == "reasoning":
            reasoning += [p.get("text") or "" for p in item.get("content") or [] if p.get("type") == "reasoning_text"]
        elif kind == "function_call":
            calls.append(ToolCall(len(calls), item.get("call_id"), item.get("name"), item.get("arguments") or "", "function"))
    return ChatResult(_nonempty(content), _nonempty(reasoning), "reasoning" if reasoning else None, calls,
                      responses_finish(body, bool(calls)), body.get("usage"), False, body)  # fmt: skip


def responses_finish(body: dict[str, Any], has_calls: bool) -> str | None:
    """The kit's finish reason for a Responses answer."""
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else f"incomplete:{reason}"
    if body.get("status") != "completed":
        return f"status:{body.get('status')}"
    return "tool_calls" if has_calls else "stop"


#: Anthropic stop reasons in the kit's terms.
MESSAGES_STOP = {"tool_use": "tool_calls", "end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def from_messages(body: dict[str, Any]) -> ChatResult:
    """An Anthropic Messages answer as a ChatResult: `text` blocks as content, `thinking` blocks as
    reasoning, `tool_use` blocks as calls (their `input` as JSON text), `stop_reason` translated."""
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[ToolCall] = []
    for block in body.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            content.append(block.get("text") or "")
        elif kind == "thinking":
            reasoning.append(block.get("thinking") or "")
        elif kind == "tool_use":
            calls.append(ToolCall(len(calls), block.get("id"), block.get("name"), json.dumps(block.get("input"), ensure_ascii=False), "function"))
    stop = body.get("stop_reason")
    return ChatResult(_nonempty(content), _nonempty(reasoning), "reasoning" if reasoning else None, calls,
                      MESSAGES_STOP.get(str(stop), f"stop_reason:{stop}"), body.get("usage"), False, body)  # fmt: skip


def stream_error(event: Event) -> tuple[int, str] | None:
    """(status, message) when an event reports a failure mid-stream: Anthropic's `error` event,
    Responses' `error` or `response.failed`, or an OpenAI-style `{"error": ...}` chunk."""
    found = error_event(event.data)
    if found is None:
        return None
    return found.status, f"mid-stream error event ({found.kind or 'error'}): {found.message}"


def json_or_text(text: str) -> Any:
    """A body's JSON, or its text when it is not JSON."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def schema_problems(kind: str, document: Any, where: str = "") -> list[str]:
    """`pytest_glm45.clients.schemas.violations`, each line prefixed with where the document was."""
    return [f"{where}{line}" for line in schemas.violations(kind, document)]


def assemble_responses(events: list[Event]) -> tuple[ChatResult, list[str]]:
    """Fold a streamed Responses answer: the ChatResult its deltas add up to, and every way the event
    sequence breaks the contract (schema, order, deltas that do not add up to their `done` events,
    a final response that differs from the items streamed).

    The contract: `response.created` first, `response.in_progress` next, `response.completed` (or
    `response.incomplete`) last, `sequence_number` counting from 0 by one; each output item opens
    with `output_item.added` at the next `output_index` and closes with `output_item.done` before the
    next opens; its deltas carry its `item_id`; text, reasoning and argument deltas join to their
    `.done` event's value and to the item's final value."""
    problems: list[str] = []
    for n, ev in enumerate(events):
        problems += schema_problems("responses-event", ev.data, f"event {n} ({ev.data.get('type')}): ")
        if ev.name is not None and ev.name != ev.data.get("type"):
            problems.append(f"event {n}: SSE event name {ev.name!r} differs from its type {ev.data.get('type')!r}")
    types = [ev.data.get("type") for ev in events]
    if not types:
        return ChatResult(None, None, None, [], None, None, True, events), ["the stream carried no event"]
    if types[0] != "response.created":
        problems.append(f"the first event is {types[0]!r}, not 'response.created'")
    if len(types) > 1 and types[1] != "response.in_progress":
        problems.append(f"the second event is {types[1]!r}, not 'response.in_progress'")
    terminal = ("response.completed", "response.incomplete")
    if types[-1] not in terminal:
        problems.append(f"the last event is {types[-1]!r}, not one of {terminal}")
    extra_terminal = [i for i, t in enumerate(types[:-1]) if t in terminal]
    if extra_terminal:
        problems.append(f"a terminal event before the end, at event(s) {extra_terminal}")
    seqs = [ev.data.get("sequence_number") for ev in events]
    if seqs != list(range(len(events))):
        problems.append(f"sequence_number does not count 0, 1, 2, ...: {seqs[:40]}")

    items: dict[int, dict[str, Any]] = {}
    done: dict[int, dict[str, Any]] = {}
    text: dict[tuple[int, str], list[str]] = {}
    text_done: dict[tuple[int, str], str] = {}
    open_index: int | None = None
    for n, ev in enumerate(events):
        d = ev.data
        kind = str(d.get("type"))
        idx: Any = d.get("output_index")
        if kind == "response.output_item.added":
            if open_index is not None:
                problems.append(f"event {n}: output item {idx} opens while item {open_index} is still open")
            if idx != len(items):
                problems.append(f"event {n}: output item opens at output_index {idx}, expected {len(items)}")
            items[idx] = d.get("item") or {}
            open_index = idx
        elif kind == "response.output_item.done":
            if idx != open_index:
                problems.append(f"event {n}: output_item.done for {idx} while the open item is {open_index}")
            done[idx] = d.get("item") or {}
            open_index = None
        elif kind.endswith(".delta") or kind.endswith(".done"):
            if kind.startswith("response.content_part") or kind.startswith("response.reasoning_summary_part"):
                continue
            if idx not in items or idx in done:
                problems.append(f"event {n}: {kind} for output_index {idx}, which is not open")
                continue
            if d.get("item_id") is not None and d.get("item_id") != items[idx].get("id"):
                problems.append(f"event {n}: {kind} names item_id {d.get('item_id')!r}, the open item is {items[idx].get('id')!r}")
            stem = kind.rsplit(".", 1)[0]
            key = (idx, stem)
            if kind.endswith(".delta"):
                if key in text_done:
                    problems.append(f"event {n}: {kind} after {stem}.done")
                text.setdefault(key, []).append(str(d.get("delta") or ""))
            else:
                value = d.get("arguments") if stem.endswith("function_call_arguments") else d.get("text")
                text_done[key] = str(value or "")
                joined = "".join(text.get(key, []))
                if joined != text_done[key]:
                    problems.append(f"event {n}: {kind} says {text_done[key]!r}, its deltas joined say {joined!r}")
    if open_index is not None:
        problems.append(f"output item {open_index} never got output_item.done")
    final = events[-1].data.get("response") or {}
    final_items = final.get("output") or []
    # The items as the deltas built them: the final value of each, in output order.
    built = []
    for idx in sorted(items):
        item = dict(done.get(idx) or items[idx])
        item_kind = item.get("type")
        if item_kind == "function_call":
            streamed = "".join(text.get((idx, "response.function_call_arguments"), []))
            if streamed != (item.get("arguments") or ""):
                problems.append(f"output item {idx}: argument deltas join to {streamed!r}, the item says {item.get('arguments')!r}")
        elif item_kind in ("message", "reasoning"):
            stem = "response.output_text" if item_kind == "message" else "response.reasoning_text"
            streamed = "".join(text.get((idx, stem), []))
            parts = [p.get("text") or "" for p in item.get("content") or []]
            if streamed != "".join(parts):
                problems.append(f"output item {idx} ({item_kind}): deltas join to {streamed!r}, the item says {''.join(parts)!r}")
        built.append(item)
    if [_essential_item(i) for i in built] != [_essential_item(i) for i in final_items]:
        problems.append(f"the final response's output {[_essential_item(i) for i in final_items]} differs from the items "
                        f"streamed {[_essential_item(i) for i in built]}")  # fmt: skip
    problems += schema_problems("responses", final, "the final response: ") if final else ["the last event carries no response"]
    result = from_responses({**final, "output": built})
    return ChatResult(result.content, result.reasoning, result.reasoning_field, result.tool_calls, result.finish_reason,
                      result.usage, True, events), problems  # fmt: skip


def _essential_item(item: dict[str, Any]) -> tuple[Any, ...]:
    """What an output item says, ids of content parts aside."""
    kind = item.get("type")
    if kind == "function_call":
        return (kind, item.get("call_id"), item.get("name"), item.get("arguments"))
    return (kind, tuple(p.get("text") for p in item.get("content") or []))


#: Which delta type each Messages content block takes.
BLOCK_DELTAS = {"text": ("text_delta",), "thinking": ("thinking_delta", "signature_delta"), "tool_use": ("input_json_delta",)}


def assemble_messages(events: list[Event]) -> tuple[ChatResult, list[str]]:
    """Fold a streamed Anthropic Messages answer: the ChatResult its events add up to, and every way
    the sequence breaks the contract (schema, order, deltas of the wrong type for their block, tool
    input that does not join into a JSON object).

    The contract: `message_start` first (its message's content empty), then each content block as
    `content_block_start` at the next index, its deltas, `content_block_stop` (blocks one at a time),
    then one `message_delta` with the stop reason, then `message_stop` last; `ping` anywhere; the
    SSE event name equals each event's type."""
    problems: list[str] = []
    for n, ev in enumerate(events):
        if ev.data.get("type") != "ping":
            problems += schema_problems("messages-event", ev.data, f"event {n} ({ev.data.get('type')}): ")
        if ev.name != ev.data.get("type"):
            problems.append(f"event {n}: SSE event name {ev.name!r} differs from its type {ev.data.get('type')!r} "
                            "(Anthropic's SDK dispatches on the name)")  # fmt: skip
    seq = [ev for ev in events if ev.data.get("type") != "ping"]
    types = [ev.data.get("type") for ev in seq]
    if not types:
        return ChatResult(None, None, None, [], None, None, True, events), ["the stream carried no event"]
    if types[0] != "message_start":
        problems.append(f"the first event is {types[0]!r}, not 'message_start'")
    elif (seq[0].data.get("message") or {}).get("content"):
        problems.append(f"message_start's message already has content: {seq[0].data['message']['content']!r}")
    if types[-1] != "message_stop":
        problems.append(f"the last event is {types[-1]!r}, not 'message_stop'")
    deltas = [i for i, t in enumerate(types) if t == "message_delta"]
    if len(deltas) != 1:
        problems.append(f"expected exactly one message_delta, got {len(deltas)}")
    elif deltas[0] != len(types) - 2:
        problems.append(f"message_delta is not right before message_stop (events {types[deltas[0]:]})")

    blocks: list[dict[str, Any]] = []
    parts: list[list[str]] = []
    open_index: int | None = None
    stop = None
    usage = None
    for n, ev in enumerate(seq):
        d = ev.data
        kind = d.get("type")
        idx: Any = d.get("index")
        if kind == "content_block_start":
            if open_index is not None:
                problems.append(f"event {n}: block {idx} starts while block {open_index} is open")
            if idx != len(blocks):
                problems.append(f"event {n}: block starts at index {idx}, expected {len(blocks)}")
            block = dict(d.get("content_block") or {})
            if block.get("type") == "tool_use" and block.get("input") not in ({}, None):
                problems.append(f"event {n}: a tool_use block starts with input {block.get('input')!r}, not {{}}")
            blocks.append(block)
            parts.append([])
            open_index = idx
        elif kind == "content_block_delta":
            if idx != open_index or open_index is None:
                problems.append(f"event {n}: a delta for block {idx} while the open block is {open_index}")
                continue
            delta = d.get("delta") or {}
            block = blocks[idx]
            if delta.get("type") not in BLOCK_DELTAS.get(str(block.get("type")), ()):
                problems.append(f"event {n}: a {delta.get('type')!r} delta in a {block.get('type')!r} block "
                                f"(accepted: {BLOCK_DELTAS.get(str(block.get('type')))})")  # fmt: skip
            field = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}.get(str(delta.get("type")))
            if field is not None:
                parts[idx].append(str(delta.get(field) or ""))
        elif kind == "content_block_stop":
            if idx != open_index:
                problems.append(f"event {n}: content_block_stop for {idx} while the open block is {open_index}")
            open_index = None
        elif kind == "message_delta":
            stop = (d.get("delta") or {}).get("stop_reason")
            usage = d.get("usage")
    if open_index is not None:
        problems.append(f"block {open_index} never got content_block_stop")
    built: list[dict[str, Any]] = []
    for idx, block in enumerate(blocks):
        joined = "".join(parts[idx])
        kind = block.get("type")
        if kind == "tool_use":
            try:
                value = json.loads(joined) if joined else {}
            except ValueError:
                problems.append(f"block {idx} ({block.get('name')}): input_json_delta fragments do not join into JSON: {joined!r}")
                value = joined
            if not isinstance(value, dict):
                problems.append(f"block {idx} ({block.get('name')}): the input is JSON {type(value).__name__}, not an object: {joined!r}")
            built.append({**block, "input": value})
        elif kind == "text":
            built.append({**block, "text": (block.get("text") or "") + joined})
        elif kind == "thinking":
            built.append({**block, "thinking": (block.get("thinking") or "") + joined})
        else:
            built.append(block)
    message = {**(seq[0].data.get("message") or {}), "content": built, "stop_reason": stop}
    if usage:
        message["usage"] = {**(message.get("usage") or {}), **usage}
    problems += schema_problems("messages", message, "the assembled message: ")
    result = from_messages(message)
    return ChatResult(result.content, result.reasoning, result.reasoning_field, result.tool_calls, result.finish_reason,
                      result.usage, True, events), problems  # fmt: skip


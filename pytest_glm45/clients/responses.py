"""The Responses API's adapter (what Codex and the Agents SDK call): its request, its answer read into the
kit's terms, and its contract.

`request` translates a check's fields and conversation (`responses_input`: reasoning as `reasoning` items,
calls as `function_call` items, tool messages as `function_call_output`); `from_responses` reads a body and
`assemble_responses` folds a stream of events into the same `ChatResult`, listing every way the events break
the API's streaming contract; `call` sends one conversation through the transport. Finish reasons: completed
with a `function_call` output is `tool_calls`, without one `stop`, incomplete for `max_output_tokens` `length`.

It imports the transport, the schemas and the kit's terms, never another API's adapter.
"""

from __future__ import annotations

from typing import Any

from pytest_glm45.clients.schemas import schema_problems
from pytest_glm45.clients.terms import ChatResult, SurfaceAnswer, nonempty, passthrough, request_fields, text_of
from pytest_glm45.clients.transport import Event, Transport
from pytest_glm45.glm.toolcall import ToolCall

#: The surface's name in check ids, and its endpoint.
NAME, PATH = "responses", "/v1/responses"


def request(model: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The body of a Responses request for a conversation and fields in the kit's terms (`terms.FIELDS`)."""
    fields = request_fields(fields)
    body: dict[str, Any] = {"model": model, "input": responses_input(messages), **passthrough(fields)}
    if "max_tokens" in fields:
        body["max_output_tokens"] = fields["max_tokens"]
    if "tools" in fields:
        body["tools"] = [{"type": "function", **t["function"]} for t in fields["tools"]]
    if "tool_choice" in fields:
        choice = fields["tool_choice"]
        body["tool_choice"] = choice if isinstance(choice, str) else {"type": "function", "name": choice["function"]["name"]}
    return body


def call(transport: Transport, messages: list[dict[str, Any]], stream: bool = False,
         native: dict[str, Any] | None = None, **fields: Any) -> SurfaceAnswer:  # fmt: skip
    """Send one conversation, streamed or not; its answer and every way it broke the API's contract.
    `native` holds fields in the API's own terms, added as they are."""
    body = {**request(transport.model, messages, **fields), **(native or {})}
    if stream:
        result, problems = assemble_responses(transport.stream_events(PATH, body))
        return SurfaceAnswer(NAME, result, problems, body)
    data = transport.post(PATH, body)
    return SurfaceAnswer(NAME, from_responses(data), schema_problems("responses", data), body)


def responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items: an assistant's reasoning becomes a `reasoning` item, its
    calls `function_call` items, a tool message a `function_call_output`."""
    items: list[dict[str, Any]] = []
    for n, m in enumerate(messages):
        role = m["role"]
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": text_of(m["content"])})
        elif role == "assistant":
            if m.get("reasoning"):
                items.append({"type": "reasoning", "id": f"rs_{n}", "summary": [],
                              "content": [{"type": "reasoning_text", "text": m["reasoning"]}]})  # fmt: skip
            if m.get("content"):
                items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text_of(m["content"]), "annotations": []}]})
            for tc in m.get("tool_calls") or []:
                items.append({"type": "function_call", "call_id": tc["id"], "name": tc["function"]["name"], "arguments": tc["function"]["arguments"]})
        else:
            items.append({"role": role, "content": text_of(m["content"])})
    return items


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
    return ChatResult(nonempty(content), nonempty(reasoning), "reasoning" if reasoning else None, calls,
                      responses_finish(body, bool(calls)), body.get("usage"), False, body)  # fmt: skip


def responses_finish(body: dict[str, Any], has_calls: bool) -> str | None:
    """The kit's finish reason for a Responses answer."""
    if body.get("status") == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        return "length" if reason == "max_output_tokens" else f"incomplete:{reason}"
    if body.get("status") != "completed":
        return f"status:{body.get('status')}"
    return "tool_calls" if has_calls else "stop"


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

"""The Anthropic Messages API's adapter (what Claude Code and Anthropic-SDK clients call): its request, its
answer read into the kit's terms, and its contract.

`request` translates a check's fields and conversation (`messages_input`: the system turn apart, reasoning as
`thinking` blocks, calls as `tool_use` blocks, tool messages as `tool_result` blocks in a user turn);
`from_messages` reads a body and `assemble_messages` folds a stream of named events into the same
`ChatResult`, listing every way the events break the API's streaming contract; `call` sends one conversation
through the transport. Stop reasons: `tool_use` is `tool_calls`, `end_turn` and `stop_sequence` are `stop`,
`max_tokens` is `length`.

It imports the transport, the schemas and the kit's terms, never another API's adapter.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_glm45.clients.schemas import schema_problems
from pytest_glm45.clients.terms import ChatResult, SurfaceAnswer, nonempty, passthrough, request_fields, text_of
from pytest_glm45.clients.transport import Event, Transport
from pytest_glm45.glm.toolcall import ToolCall

#: The surface's name in check ids, and its endpoint.
NAME, PATH = "messages", "/v1/messages"


def request(model: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The body of a Messages request for a conversation and fields in the kit's terms (`terms.FIELDS`)."""
    fields = request_fields(fields)
    system, converted = messages_input(messages)
    body = {"model": model, "messages": converted, "max_tokens": fields.get("max_tokens", 1024), **passthrough(fields)}
    if system:
        body["system"] = system
    if "tools" in fields:
        body["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                          "input_schema": t["function"].get("parameters") or {"type": "object"}} for t in fields["tools"]]  # fmt: skip
    if "tool_choice" in fields:
        choice = fields["tool_choice"]
        named = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}
        body["tool_choice"] = named[choice] if isinstance(choice, str) else {"type": "tool", "name": choice["function"]["name"]}
    return body


def call(transport: Transport, messages: list[dict[str, Any]], stream: bool = False,
         native: dict[str, Any] | None = None, **fields: Any) -> SurfaceAnswer:  # fmt: skip
    """Send one conversation, streamed or not; its answer and every way it broke the API's contract.
    `native` holds fields in the API's own terms (`thinking`), added as they are."""
    body = {**request(transport.model, messages, **fields), **(native or {})}
    if stream:
        result, problems = assemble_messages(transport.stream_events(PATH, body))
        return SurfaceAnswer(NAME, result, problems, body)
    data = transport.post(PATH, body)
    return SurfaceAnswer(NAME, from_messages(data), schema_problems("messages", data), body)


def messages_input(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages as Anthropic (system, messages): an assistant's reasoning becomes a `thinking`
    block, its calls `tool_use` blocks; a tool message a `tool_result` block in a user turn."""
    system = "\n".join(text_of(m["content"]) for m in messages if m["role"] == "system") or None
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": text_of(m["content"])}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.get("reasoning"):
                blocks.append({"type": "thinking", "thinking": m["reasoning"], "signature": ""})
            if m.get("content"):
                blocks.append({"type": "text", "text": text_of(m["content"])})
            for tc in m.get("tool_calls") or []:
                blocks.append({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": json.loads(tc["function"]["arguments"])})
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": role, "content": text_of(m["content"])})
    return system, out


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
    return ChatResult(nonempty(content), nonempty(reasoning), "reasoning" if reasoning else None, calls,
                      MESSAGES_STOP.get(str(stop), f"stop_reason:{stop}"), body.get("usage"), False, body)  # fmt: skip


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

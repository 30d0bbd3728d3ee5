"""The APIs GLM-4.5's users call, in the kit's own terms: Chat Completions, Responses, Anthropic Messages.

A check states its request once, in Chat Completions' terms (messages, tools, tool_choice,
max_tokens, chat_template_kwargs, vllm_xargs), and its expectation once, as a `ChatResult`
(content, reasoning, calls with typed arguments, finish reason). This module translates the request
to each surface (`request`) and each surface's answer back (`from_responses`, `from_messages`),
streamed or not (`assemble_responses`, `assemble_messages`, which also list every way the event
sequence breaks that API's streaming contract). Stop reasons map as the APIs define them:

=============  ============================  ==========================================
kit            Responses                     Messages
=============  ============================  ==========================================
tool_calls     completed, function_call out  stop_reason tool_use
stop           completed, no function_call   stop_reason end_turn (or stop_sequence)
length         incomplete: max_output_tokens stop_reason max_tokens
=============  ============================  ==========================================

Everything works on the JSON the server sent; `pytest_glm45.clients.schemas` validates it against the SDKs'
types. `stream_events` reads a server-sent-event stream keeping each event's name, which Anthropic's
SDK dispatches on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from pytest_glm45.clients import schemas
from pytest_glm45.clients.answers import ChatResult
from pytest_glm45.clients.chat import ChatClient, HttpError, request_id_header, sse_lines
from pytest_glm45.glm.toolcall import ToolCall
from pytest_glm45.records import reproducer

#: The surfaces, by the name check ids carry.
SURFACES = ("chat", "responses", "messages")
#: Each surface's endpoint.
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
#: The request fields a check may state (Chat Completions' names); anything else is refused.
FIELDS = ("tools", "tool_choice", "max_tokens", "chat_template_kwargs", "vllm_xargs", "temperature")


@dataclass(frozen=True)
class Event:
    """One server-sent event: its `event:` name (None when the line is absent) and its JSON data."""

    name: str | None
    data: dict[str, Any]


# -- requests ---------------------------------------------------------------------------------


def request(surface: str, model: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The body of `surface`'s request for a conversation and fields stated in Chat Completions' terms."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"fields {unknown} have no translation to the surfaces; accepted: {', '.join(FIELDS)}")
    fields = {k: v for k, v in fields.items() if v is not None}
    if surface == "chat":
        return {"model": model, "messages": messages, **fields}
    passthrough: dict[str, Any] = {k: fields[k] for k in ("chat_template_kwargs", "vllm_xargs", "temperature") if k in fields}
    if surface == "responses":
        body: dict[str, Any] = {"model": model, "input": responses_input(messages), **passthrough}
        if "max_tokens" in fields:
            body["max_output_tokens"] = fields["max_tokens"]
        if "tools" in fields:
            body["tools"] = [{"type": "function", **t["function"]} for t in fields["tools"]]
        if "tool_choice" in fields:
            choice = fields["tool_choice"]
            body["tool_choice"] = choice if isinstance(choice, str) else {"type": "function", "name": choice["function"]["name"]}
        return body
    if surface == "messages":
        system, converted = messages_input(messages)
        body = {"model": model, "messages": converted, "max_tokens": fields.get("max_tokens", 1024), **passthrough}
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
    raise ValueError(f"surface {surface!r} is not known; accepted: {', '.join(SURFACES)}")


def responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages as Responses input items: an assistant's reasoning becomes a `reasoning` item, its
    calls `function_call` items, a tool message a `function_call_output`."""
    items: list[dict[str, Any]] = []
    for n, m in enumerate(messages):
        role = m["role"]
        if role == "tool":
            items.append({"type": "function_call_output", "call_id": m["tool_call_id"], "output": _text(m["content"])})
        elif role == "assistant":
            if m.get("reasoning"):
                items.append({"type": "reasoning", "id": f"rs_{n}", "summary": [],
                              "content": [{"type": "reasoning_text", "text": m["reasoning"]}]})  # fmt: skip
            if m.get("content"):
                items.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": _text(m["content"]), "annotations": []}]})
            for tc in m.get("tool_calls") or []:
                items.append({"type": "function_call", "call_id": tc["id"], "name": tc["function"]["name"], "arguments": tc["function"]["arguments"]})
        else:
            items.append({"role": role, "content": _text(m["content"])})
    return items


def messages_input(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages as Anthropic (system, messages): an assistant's reasoning becomes a `thinking`
    block, its calls `tool_use` blocks; a tool message a `tool_result` block in a user turn."""
    system = "\n".join(_text(m["content"]) for m in messages if m["role"] == "system") or None
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": _text(m["content"])}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif role == "assistant":
            blocks: list[dict[str, Any]] = []
            if m.get("reasoning"):
                blocks.append({"type": "thinking", "thinking": m["reasoning"], "signature": ""})
            if m.get("content"):
                blocks.append({"type": "text", "text": _text(m["content"])})
            for tc in m.get("tool_calls") or []:
                blocks.append({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"], "input": json.loads(tc["function"]["arguments"])})
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": role, "content": _text(m["content"])})
    return system, out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return "" if content is None else str(content)


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


# -- streams ------------------------------------------------------------------------------------


def stream_events(client: ChatClient, path: str, body: dict[str, Any]) -> list[Event]:
    """POST `body` with stream=true and return every event with its name, until the stream ends or
    `[DONE]`; a non-200 raises HttpError, as an error event does (its status from the event, else 500)."""
    exchange = reproducer.Exchange("POST", path, None, stream=True)
    exchange.body = sent = reproducer.tagged(path, {**body, "stream": True}, exchange.request_id)
    raw: list[str] = []
    events: list[Event] = []
    try:
        # The client's own connection pool and key: the batch shares one client across threads.
        with client._http.stream("POST", path, json=sent, headers=request_id_header(exchange)) as resp:
            exchange.status = resp.status_code
            if resp.status_code != 200:
                resp.read()
                exchange.response = reproducer.truncated(resp.text)
                raise HttpError(resp.status_code, _json_or_text(resp.text), path)
            for event in parse_sse(sse_lines(resp)):
                raw.append(json.dumps(event.data, ensure_ascii=False))
                error = stream_error(event)
                if error is not None:
                    raise HttpError(error[0], {"error": {"message": error[1]}, "event": event.data}, path)
                events.append(event)
    except httpx.HTTPError as exc:
        exchange.error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        exchange.chunks, exchange.chunks_total = reproducer.keep_chunks(raw), len(raw)
        reproducer.record(exchange)
    return events


def stream_error(event: Event) -> tuple[int, str] | None:
    """(status, message) when an event reports a failure mid-stream: Anthropic's `error` event,
    Responses' `error` or `response.failed`, or an OpenAI-style `{"error": ...}` chunk."""
    data = event.data
    kind = data.get("type")
    err = data.get("error") if isinstance(data.get("error"), dict) else None
    if kind == "response.failed":
        err = (data.get("response") or {}).get("error") or {}
    elif kind == "error" and err is None:
        err = data
    elif err is None or "choices" in data:
        return None
    code = err.get("code") if isinstance(err, dict) else None
    try:
        status = int(code) if code is not None else 500
    except (TypeError, ValueError):
        status = 500
    return status, f"mid-stream error event ({kind or 'error'}): {err.get('message') if isinstance(err, dict) else err}"


def parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events from server-sent-event lines: `event:` names the next `data:`; a blank line ends an event."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                if payload.strip() != "[DONE]":
                    yield Event(name, json.loads(payload))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
    if data and "\n".join(data).strip() != "[DONE]":
        yield Event(name, json.loads("\n".join(data)))


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def schema_problems(kind: str, document: Any, where: str = "") -> list[str]:
    """`pytest_glm45.clients.schemas.violations`, each line prefixed with where the document was."""
    return [f"{where}{line}" for line in schemas.violations(kind, document)]


def chat_schema_problems(result: ChatResult, stream: bool) -> list[str]:
    """A Chat Completions answer against the openai SDK's types: its body (`result.raw`), or each of
    its chunks when streamed."""
    if stream:
        return [p for n, chunk in enumerate(result.raw or []) for p in schema_problems("chat-chunk", chunk, f"chunk {n}: ")]
    return schema_problems("chat", result.raw)


def assert_chat_schema(result: ChatResult, stream: bool) -> None:
    """Fail when `chat_schema_problems` finds any: a strict client (the SDK's types) rejects the answer."""
    problems = chat_schema_problems(result, stream)
    assert not problems, ("the answer breaks the openai SDK's types (a strict client rejects it):\n  "
                          + "\n  ".join(problems[:20]))  # fmt: skip


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


# -- one call, any surface ------------------------------------------------------------------------


@dataclass
class SurfaceAnswer:
    """One request on one surface: the answer in the kit's terms and what broke the API's contract."""

    surface: str
    result: ChatResult
    #: schema violations of the answer (and, streamed, of each event and the sequence's contract)
    problems: list[str]
    body: dict[str, Any]


def call(client: ChatClient, surface: str, messages: list[dict[str, Any]], stream: bool = False,
         native: dict[str, Any] | None = None, **fields: Any) -> SurfaceAnswer:
    """Send one conversation to `surface`, streamed or not; its answer as a ChatResult and its problems.
    `native` holds fields in the surface's own terms (Anthropic's `thinking`), added as they are."""
    from pytest_glm45.clients.answers import assemble, from_response

    body = {**request(surface, client.model, messages, **fields), **(native or {})}
    path = PATHS[surface]
    if surface == "chat":
        if stream:
            body["stream_options"] = {"include_usage": True}
            result = assemble(client.post_stream(path, body))
            return SurfaceAnswer(surface, result, chat_schema_problems(result, stream=True), body)
        result = from_response(client.post(path, body))
        return SurfaceAnswer(surface, result, chat_schema_problems(result, stream=False), body)
    if stream:
        events = stream_events(client, path, body)
        result, problems = assemble_responses(events) if surface == "responses" else assemble_messages(events)
        return SurfaceAnswer(surface, result, problems, body)
    data = client.post(path, body)
    kind = "responses" if surface == "responses" else "messages"
    parsed = from_responses(data) if surface == "responses" else from_messages(data)
    return SurfaceAnswer(surface, parsed, schema_problems(kind, data), body)

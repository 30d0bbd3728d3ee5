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

from pytest_glm45.clients.answers import ChatResult
from pytest_glm45.clients.chat import ChatClient, HttpError, sse_lines
from pytest_glm45.clients.surface_answers import (
    BLOCK_DELTAS as BLOCK_DELTAS,
)
from pytest_glm45.clients.surface_answers import (
    MESSAGES_STOP as MESSAGES_STOP,
)
from pytest_glm45.clients.surface_answers import (
    Event as Event,
)
from pytest_glm45.clients.surface_answers import (
    assemble_messages as assemble_messages,
)
from pytest_glm45.clients.surface_answers import (
    assemble_responses as assemble_responses,
)
from pytest_glm45.clients.surface_answers import (
    from_messages as from_messages,
)
from pytest_glm45.clients.surface_answers import (
    from_responses as from_responses,
)

#: The surfaces, by the name check ids carry.
from pytest_glm45.clients.surface_answers import (
    responses_finish as responses_finish,
)
from pytest_glm45.clients.surface_answers import (
    schema_problems as schema_problems,
)
from pytest_glm45.clients.surface_answers import (
    stream_error as stream_error,
)

SURFACES = ("chat", "responses", "messages")
#: Each surface's endpoint.
PATHS = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"}
#: The request fields a check may state (Chat Completions' names); anything else is refused.
FIELDS = ("tools", "tool_choice", "max_tokens", "chat_template_kwargs", "vllm_xargs", "temperature")


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


# -- streams ------------------------------------------------------------------------------------


def stream_events(client: ChatClient, path: str, body: dict[str, Any]) -> list[Event]:
    """POST `body` with stream=true and return every event with its name, until the stream ends or
    `[DONE]`; a non-200 raises HttpError, as an error event does (its status from the event, else 500)."""
    raw: list[str] = []
    events: list[Event] = []
    # The client's own connection pool and key: the batch shares one client across threads.
    with client.streaming(path, body, raw) as resp:
        for event in parse_sse(sse_lines(resp)):
            raw.append(json.dumps(event.data, ensure_ascii=False))
            error = stream_error(event)
            if error is not None:
                raise HttpError(error[0], {"error": {"message": error[1]}, "event": event.data}, path)
            events.append(event)
    return events


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

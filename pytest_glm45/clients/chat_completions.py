"""The Chat Completions API's adapter: its request, its answer read into the kit's terms, and its contract.

`request` builds a chat completion's body from a check's fields; `from_response` reads a non-streamed
answer and `assemble` folds the chunks of a streamed one into the same `ChatResult`, so a check compares
the two directly. The contract: `protocol_violations` lists every way a stream breaks the OpenAI streaming
contract for tool calls and reasoning, `markup_leaks` the markup left in content, `chat_schema_problems`
every way an answer breaks the openai SDK's types. `call` sends one conversation through the transport
and gives the answer with its problems. Everything works on the JSON the server sent (dicts), not on a
client library's objects, so nothing the server said is hidden or renamed.

It imports the transport, the schemas and the kit's terms, never another API's adapter.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_glm45.clients.schemas import schema_problems
from pytest_glm45.clients.terms import ChatResult, SurfaceAnswer, request_fields
from pytest_glm45.clients.transport import Transport
from pytest_glm45.glm.glm_format import LEAK_MARKERS
from pytest_glm45.glm.toolcall import ToolCall

#: The surface's name in check ids, and its endpoint.
NAME, PATH = "chat", "/v1/chat/completions"


def request(model: str, messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The body of a chat completion for a conversation and fields in the kit's terms (`terms.FIELDS`)."""
    return {"model": model, "messages": messages, **request_fields(fields)}


def answer(transport: Transport, body: dict[str, Any], stream: bool) -> ChatResult:
    """Send a chat completion's `body`, streamed or not, and read its answer."""
    if stream:
        return assemble(transport.post_stream(PATH, body))
    return from_response(transport.post(PATH, body))


def call(transport: Transport, messages: list[dict[str, Any]], stream: bool = False,
         native: dict[str, Any] | None = None, **fields: Any) -> SurfaceAnswer:  # fmt: skip
    """Send one conversation, streamed or not (with usage); its answer and its schema problems.
    `native` holds fields in the API's own terms, added as they are."""
    body = {**request(transport.model, messages, **fields), **(native or {})}
    if stream:
        body["stream_options"] = {"include_usage": True}
    result = answer(transport, body, stream)
    return SurfaceAnswer(NAME, result, chat_schema_problems(result, stream), body)


#: Names vLLM has used for the reasoning field: 0.32 says `reasoning`, older `reasoning_content`.
REASONING_FIELDS = ("reasoning", "reasoning_content")


def _reasoning_of(message: dict[str, Any]) -> tuple[str | None, str | None]:
    for name in REASONING_FIELDS:
        if message.get(name) is not None:
            return message[name], name
    return None, None


def from_response(body: dict[str, Any]) -> ChatResult:
    """A non-streamed chat completion as a ChatResult (first choice)."""
    choice = body["choices"][0]
    message = choice.get("message") or {}
    reasoning, reasoning_field = _reasoning_of(message)
    calls = [
        ToolCall(
            index=i,
            id=tc.get("id"),
            name=(tc.get("function") or {}).get("name"),
            arguments=(tc.get("function") or {}).get("arguments") or "",
            type=tc.get("type"),
        )
        for i, tc in enumerate(message.get("tool_calls") or [])
    ]
    return ChatResult(
        content=message.get("content"),
        reasoning=reasoning,
        reasoning_field=reasoning_field,
        tool_calls=calls,
        finish_reason=choice.get("finish_reason"),
        usage=body.get("usage"),
        stream=False,
        raw=body,
    )


def assemble(chunks: list[dict[str, Any]]) -> ChatResult:
    """Fold streamed chunks into a ChatResult.

    Content and reasoning stay None unless some delta carried non-empty text for them, so
    that a streamed tool-only turn compares equal to a non-streamed `content: null`.
    """
    content: list[str] | None = None
    reasoning: list[str] | None = None
    reasoning_field = None
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for chunk in chunks:
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            # An empty fragment says nothing: a stream can only show null by sending no text.
            if delta.get("content"):
                content = (content or []) + [delta["content"]]
            text, name = _reasoning_of(delta)
            if text:
                reasoning = (reasoning or []) + [text]
                reasoning_field = reasoning_field or name
            for tc in delta.get("tool_calls") or []:
                idx = tc.get("index", 0)
                slot = calls.setdefault(idx, {"id": None, "name": None, "type": None, "arguments": []})
                fn = tc.get("function") or {}
                slot["id"] = slot["id"] or tc.get("id")
                slot["type"] = slot["type"] or tc.get("type")
                if fn.get("name"):
                    # Names may arrive in fragments; a server that repeats the whole name is
                    # caught by protocol_violations, and shows here as a doubled name.
                    slot["name"] = (slot["name"] or "") + fn["name"]
                if fn.get("arguments"):
                    slot["arguments"].append(fn["arguments"])
            if choice.get("finish_reason") is not None:
                finish = choice["finish_reason"]
    return ChatResult(
        content=None if content is None else "".join(content),
        reasoning=None if reasoning is None else "".join(reasoning),
        reasoning_field=reasoning_field,
        tool_calls=[
            ToolCall(index=i, id=s["id"], name=s["name"], arguments="".join(s["arguments"]), type=s["type"])
            for i, s in sorted(calls.items())
        ],
        finish_reason=finish,
        usage=usage,
        stream=True,
        raw=chunks,
    )


def protocol_violations(chunks: list[dict[str, Any]], tool_choice: Any = "auto") -> list[str]:
    """Every way these chunks break the streaming contract; empty when they keep it.

    - id, type and name appear only in the first delta of each tool-call index, and that
      first delta has all three;
    - each index's argument fragments concatenate to one JSON object;
    - exactly one finish reason; under `auto`, `tool_calls` exactly when there are calls;
    - no tool-call or think markup in `content`.
    """
    problems: list[str] = []
    seen: dict[int, int] = {}
    args: dict[int, list[str]] = {}
    finishes: list[str] = []
    content: list[str] = []
    for n, chunk in enumerate(chunks):
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            for tc in delta.get("tool_calls") or []:
                idx = tc.get("index")
                if idx is None:
                    problems.append(f"chunk {n}: tool-call delta without an index")
                    continue
                fn = tc.get("function") or {}
                if idx not in seen:
                    seen[idx] = n
                    missing = [k for k, v in (("id", tc.get("id")), ("type", tc.get("type")), ("name", fn.get("name"))) if not v]
                    if missing:
                        problems.append(f"chunk {n}: first delta of tool call {idx} lacks {', '.join(missing)}")
                else:
                    repeated = [k for k, v in (("id", tc.get("id")), ("type", tc.get("type")), ("name", fn.get("name"))) if v]
                    if repeated:
                        problems.append(f"chunk {n}: tool call {idx} repeats {', '.join(repeated)} after its first delta")
                if fn.get("arguments"):
                    args.setdefault(idx, []).append(fn["arguments"])
            if choice.get("finish_reason") is not None:
                finishes.append(choice["finish_reason"])
    expected = list(range(len(seen)))
    if sorted(seen) != expected:
        problems.append(f"tool-call indices {sorted(seen)} are not 0..{len(seen) - 1}")
    for idx in seen:
        text = "".join(args.get(idx, []))
        try:
            value = json.loads(text)
        except ValueError:
            problems.append(f"tool call {idx}: argument fragments do not join into JSON: {text!r}")
            continue
        if not isinstance(value, dict):
            problems.append(f"tool call {idx}: arguments are JSON {type(value).__name__}, not an object: {text!r}")
    if len(finishes) != 1:
        problems.append(f"expected exactly one finish_reason, got {finishes}")
    elif tool_choice == "auto" and (finishes[0] == "tool_calls") != bool(seen):
        problems.append(f"finish_reason {finishes[0]!r} with {len(seen)} tool call(s) under tool_choice auto")
    joined = "".join(content)
    for marker in LEAK_MARKERS:
        if marker in joined:
            problems.append(f"{marker!r} leaked into content: {joined!r}")
    return problems


def markup_leaks(result: ChatResult) -> list[str]:
    """Markup found in a result's content (for non-streamed responses)."""
    text = result.content or ""
    return [m for m in LEAK_MARKERS if m in text]


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

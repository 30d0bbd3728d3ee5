"""Every answer and stream event checked against the published schema: the official SDKs' types.

A strict client (a typed SDK, a generated one) validates what the server sends; the kit does the
same, field by field, so a field that is missing, mistyped or misnamed is a finding even when the
kit's own parser could cope. The types are the ones users run: `openai.types.responses.Response`
and `ResponseStreamEvent`, `openai.types.chat.ChatCompletion` and `ChatCompletionChunk`,
`anthropic.types.Message` and `RawMessageStreamEvent`.

Validation is pydantic's strict mode on the JSON as sent (no coercion: `"1"` is not an integer).
Fields the types do not know are allowed, as the SDKs allow them (they accept new fields). A stream
event is validated against the one type its `type` names, so a message says what was wrong with
that event rather than why it matches none of the union's members.

The SDKs are imported when first needed: the plugin stays loadable without them.
"""

from __future__ import annotations

import json
import typing
from functools import cache
from typing import Any

#: What each kind of document is validated against: (module, type name).
KINDS: dict[str, tuple[str, str]] = {
    "chat": ("openai.types.chat", "ChatCompletion"),
    "chat-chunk": ("openai.types.chat", "ChatCompletionChunk"),
    "responses": ("openai.types.responses", "Response"),
    "responses-event": ("openai.types.responses", "ResponseStreamEvent"),
    "messages": ("anthropic.types", "Message"),
    "messages-event": ("anthropic.types", "RawMessageStreamEvent"),
}


@cache
def _type(kind: str) -> Any:
    import importlib

    if kind not in KINDS:
        raise ValueError(f"schema kind {kind!r} is not known; accepted: {', '.join(KINDS)}")
    module, name = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def _members(union: Any) -> list[Any]:
    """The concrete types of a (possibly Annotated) union, or [union] when it is not one."""
    origin = typing.get_origin(union)
    if origin is typing.Annotated:
        return _members(typing.get_args(union)[0])
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return [m for arg in typing.get_args(union) for m in _members(arg)]
    return [union]


@cache
def _by_event_type(kind: str) -> dict[str, Any]:
    """For an event union: each member by the literal value of its `type` field."""
    out: dict[str, Any] = {}
    for member in _members(_type(kind)):
        field = getattr(member, "model_fields", {}).get("type")
        if field is None:
            continue
        for literal in typing.get_args(field.annotation):
            out[str(literal)] = member
    return out


@cache
def _adapter(target: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(target)


def violations(kind: str, document: Any) -> list[str]:
    """Every way `document` (the JSON the server sent, as Python data) breaks its published type,
    one line per field: `path.to.field: what is wrong (got value)`. Empty when it conforms."""
    from pydantic import ValidationError

    target = _type(kind)
    if kind.endswith("-event"):
        events = _by_event_type(kind)
        event_type = document.get("type") if isinstance(document, dict) else None
        if event_type not in events:
            return [f"type: {event_type!r} is not an event type of {KINDS[kind][1]} (accepted: {', '.join(sorted(events))})"]
        target = events[event_type]
    try:
        _adapter(target).validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        return _describe(exc.errors())
    return []


def schema_problems(kind: str, document: Any, where: str = "") -> list[str]:
    """`violations`, each line prefixed with where the document was (`event 3 (message_stop): `)."""
    return [f"{where}{line}" for line in violations(kind, document)]


def _describe(errors: list[Any]) -> list[str]:
    """Pydantic's errors, without those of union members whose `type` literal did not match (they
    only say that the value is not that other member); a union none of whose members matched is one line."""
    wrong = {tuple(e["loc"][:-1]): e for e in errors if e["type"] == "literal_error" and e["loc"] and e["loc"][-1] == "type"}
    lines = []
    for parent in sorted({member[:-1] for member in wrong}, key=str):
        members = {tuple(e["loc"][: len(parent) + 1]) for e in errors if tuple(e["loc"][: len(parent)]) == parent and len(e["loc"]) > len(parent)}
        if members and all(m in wrong for m in members):
            got = wrong[next(iter(members))].get("input")
            accepted = sorted(str(wrong[m].get("ctx", {}).get("expected", "?")) for m in members)
            lines.append(f"{'.'.join(str(p) for p in parent) or '(document)'}.type: {got!r} is no accepted type ({', '.join(accepted)})")
    for e in errors:
        loc = tuple(e["loc"])
        if any(loc[: len(p)] == p for p in wrong if p):
            continue
        shown = json.dumps(e.get("input"), ensure_ascii=False, default=str)
        lines.append(f"{'.'.join(str(part) for part in loc) or '(document)'}: {e['msg']} (got {shown[:120]})")
    return lines


def event_types(kind: str) -> list[str]:
    """The event `type` values a stream of this kind may carry (`responses-event`, `messages-event`)."""
    return sorted(_by_event_type(kind))

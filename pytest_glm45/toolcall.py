"""GLM-4.5's own tool-call output format, written from a name and typed arguments.

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    <arg_key>days</arg_key>
    <arg_value>3</arg_value>
    </tool_call>

String values are written raw (no quotes, no escaping); every other type as JSON. GLM-4.5
writes a newline after the name and after each tag pair ("native"); GLM-4.7 writes the same
without the newlines ("compact"). Several calls simply follow one another.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STYLES = ("native", "compact")


def render_value(value: Any) -> str:
    """A value as GLM writes it inside <arg_value>: strings raw, the rest JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def render_call(name: str, arguments: Mapping[str, Any], style: str = "native") -> str:
    """One call in `style` ("native" for GLM-4.5, "compact" for GLM-4.7)."""
    if style not in STYLES:
        raise ValueError(f"style {style!r} is not accepted; accepted: {', '.join(STYLES)}")
    nl = "\n" if style == "native" else ""
    parts = [f"<tool_call>{name}{nl}"]
    for key, value in arguments.items():
        parts.append(f"<arg_key>{key}</arg_key>{nl}<arg_value>{render_value(value)}</arg_value>{nl}")
    parts.append("</tool_call>")
    return "".join(parts)


def render_calls(calls: Sequence[tuple[str, Mapping[str, Any]]], style: str = "native") -> str:
    """Several calls, one after another (GLM-4.5 puts a newline between them)."""
    sep = "\n" if style == "native" else ""
    return sep.join(render_call(name, args, style) for name, args in calls)


@dataclass(frozen=True)
class Tool:
    """A function tool as the OpenAI API takes it."""

    name: str
    properties: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    description: str = ""

    def schema(self) -> dict[str, Any]:
        params: dict[str, Any] = {"type": "object", "properties": self.properties}
        if self.required:
            params["required"] = list(self.required)
        return {"type": "function", "function": {"name": self.name, "description": self.description or self.name, "parameters": params}}


def curl_line(base_url: str, body: dict[str, Any]) -> str:
    """A command a person can paste to replay a request by hand ($GLM45_API_KEY holds the key)."""
    payload = json.dumps(body, ensure_ascii=False).replace("'", "'\\''")
    return (
        f"curl -s {base_url}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-H \"Authorization: Bearer $GLM45_API_KEY\" -d '{payload}'"
    )

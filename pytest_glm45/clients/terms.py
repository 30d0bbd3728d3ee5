"""The kit's own terms, which every API's adapter translates to and from.

A check states its request once, in Chat Completions' names (`FIELDS`), and reads every answer in one
shape, `ChatResult` (content, reasoning, calls with typed arguments, finish reason), whichever API and
delivery carried it; `SurfaceAnswer` is one request on one API with what broke that API's contract. This
module imports nothing else of the clients: the transport, the adapters and the surfaces all build on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pytest_glm45.glm.toolcall import ToolCall

#: The request fields a check may state (Chat Completions' names); anything else is refused.
FIELDS = ("tools", "tool_choice", "max_tokens", "chat_template_kwargs", "vllm_xargs", "temperature")


def request_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields a check stated, those that are None left out; ValueError names any that no API translates."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise ValueError(f"fields {unknown} have no translation to the surfaces; accepted: {', '.join(FIELDS)}")
    return {k: v for k, v in fields.items() if v is not None}


def passthrough(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields every API takes as they are: vLLM's extensions and the temperature."""
    return {k: fields[k] for k in ("chat_template_kwargs", "vllm_xargs", "temperature") if k in fields}


def text_of(content: Any) -> str:
    """A message's content as text: a list of parts joined, None as empty."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return "" if content is None else str(content)


@dataclass
class ChatResult:
    """What a chat completion said, however it was delivered."""

    content: str | None
    reasoning: str | None
    reasoning_field: str | None
    tool_calls: list[ToolCall]
    finish_reason: str | None
    usage: dict[str, Any] | None
    stream: bool
    raw: Any = field(repr=False, default=None)

    def calls(self) -> list[tuple[str | None, Any]]:
        """(name, parsed arguments) per call, in order: what a check compares."""
        return [(c.name, c.parsed()) for c in self.tool_calls]

    def essence(self) -> dict[str, Any]:
        """The fields streamed and non-streamed results must agree on, ids aside."""
        return {
            "content": self.content,
            "reasoning": self.reasoning,
            "tool_calls": [(c.name, _json_or_text(c.arguments)) for c in self.tool_calls],
            "finish_reason": self.finish_reason,
        }


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass
class SurfaceAnswer:
    """One request on one surface: the answer in the kit's terms and what broke the API's contract."""

    surface: str
    result: ChatResult
    #: schema violations of the answer (and, streamed, of each event and the sequence's contract)
    problems: list[str]
    body: dict[str, Any]


def nonempty(parts: list[str]) -> str | None:
    """Joined text; None when nothing was said (a surface has no null, only blocks or none)."""
    text = "".join(parts)
    return text or None

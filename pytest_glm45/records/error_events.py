"""Mid-stream error events: the one reading of a server-sent event that reports a failure, for every API.

vLLM reports a failure that happens after a stream started as an event instead of a status: an OpenAI-style
`{"error": {...}}` chunk (or `{"error": "text"}`) without `choices`, Responses' `error` and `response.failed`
events, Anthropic's `error` event. The chat client, the surfaces, `pytest-glm45 reproduce` and the reproducers
all ask `error_event`; a recorded chunk, kept as text, is asked through `chunk_error`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorEvent:
    """A failure an event reported: the HTTP status it names (500 when it names none), its message, its type."""

    status: int
    message: str
    kind: str | None


def error_event(data: Any) -> ErrorEvent | None:
    """The failure an event's JSON data reports, or None for an event that reports none."""
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    err: Any = data.get("error")
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
    message = err.get("message") if isinstance(err, dict) else err
    return ErrorEvent(status, str(message), kind if isinstance(kind, str) else None)


def chunk_error(payload: str) -> bool:
    """Whether a stream's recorded chunk (a `data:` payload as sent) reports a failure. A chunk the record cut short
    is no longer JSON: it counts when its text names an error outside a chat chunk (`"error"` and no `"choices"`)."""
    try:
        data = json.loads(payload)
    except ValueError:
        return '"error"' in payload and '"choices"' not in payload
    return error_event(data) is not None

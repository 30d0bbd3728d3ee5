"""Tool calls in the OpenAI API's terms: a function tool as a request declares it, and a call as
an answer returns it. (How GLM *writes* a call is `pytest_glm45.glm.glm_format`.)"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tool:
    """A function tool as the OpenAI API takes it."""

    name: str
    properties: dict[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    description: str = ""

    def schema(self) -> dict[str, Any]:
        """The `tools` list entry for this tool."""
        params: dict[str, Any] = {"type": "object", "properties": self.properties}
        if self.required:
            params["required"] = list(self.required)
        return {"type": "function", "function": {"name": self.name, "description": self.description or self.name, "parameters": params}}


@dataclass(frozen=True)
class ToolCall:
    """One parsed tool call: `arguments` is the JSON text exactly as the server sent it."""

    index: int
    id: str | None
    name: str | None
    arguments: str
    type: str | None = "function"

    def parsed(self) -> Any:
        """The arguments as JSON, or raise ValueError naming the call."""
        try:
            return json.loads(self.arguments)
        except ValueError as exc:
            raise ValueError(f"tool call {self.index} ({self.name}): arguments are not JSON: {self.arguments!r}") from exc


#: The suites' weather tool: a required string and two optional typed parameters.
WEATHER = Tool(
    "get_weather",
    {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"type": "string", "enum": ["c", "f"]}},
    ("city",),
    "Current weather for a city",
)

"""GLM-4.5's output format: its special tokens, its tags, and how it writes a tool call.

The one place the kit states the format. The tiny model's tokenizer adds these tokens, replay
ends a script with the end-of-text token, the suites' expectations and leak checks use the
tags, and the tool-call rendering below is how GLM writes a call::

    <tool_call>get_weather
    <arg_key>city</arg_key>
    <arg_value>Paris</arg_value>
    <arg_key>days</arg_key>
    <arg_value>3</arg_value>
    </tool_call>

String values are written raw (no quotes, no escaping); every other type as JSON. GLM-4.5 and
GLM-4.6 write a newline after the name and after each tag pair ("native"); GLM-4.7 writes the
same without the newlines ("compact"). Several calls simply follow one another. Sources: the
GLM-4.5 model card and chat template, and vLLM's glm45 parsers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

#: Role and control tokens: `special` in GLM's tokenizer (vLLM drops them from returned text).
CONTROL_TOKENS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
)
#: Markup tokens: plain added tokens in the published tokenizer, so that `<think>` or
#: `<tool_call>` reach the parsers as text *and* as one token id.
MARKUP_TOKENS = (
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "<tool_response>",
    "</tool_response>",
    "/nothink",
)
SPECIAL_TOKENS = CONTROL_TOKENS + MARKUP_TOKENS
#: The end of an assistant turn.
END_OF_TEXT = "<|endoftext|>"
#: Generation stops at any of these (the published generation_config does the same).
STOP_TOKENS = (END_OF_TEXT, "<|user|>", "<|observation|>")

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINK_TAGS = (THINK_OPEN, THINK_CLOSE)
#: Markup that must never reach an answer's `content`.
LEAK_MARKERS = ("<tool_call>", "</tool_call>", "<arg_key>", "<arg_value>", THINK_CLOSE)

#: Tool-call styles: GLM-4.5/4.6 "native" (newlines), GLM-4.7 "compact" (none).
STYLES = ("native", "compact")

#: A model name that says GLM-4.7 (`glm-4.7`, `glm47`, `tiny-4.7`, `zai-org/GLM-4.7-FP8`): 4.7 not inside a longer number.
_GLM47 = re.compile(r"(?<![0-9.])4[._-]?7(?![0-9])")


def generation_of(name: str | None) -> str:
    """The GLM generation a model's name says, for a server that did not declare its model: "4.7" when the name says
    GLM-4.7 (`glm-4.7`, `glm47`, `tiny-4.7`, `zai-org/GLM-4.7-FP8`), else "4.5", the kit's model (whose format GLM-4.6
    shares). A model the kit knows has its generation in the catalog (`engine.catalog.ModelInfo.generation`)."""
    return "4.7" if name and _GLM47.search(name.lower()) else "4.5"


def own_format(model: str | None) -> str:
    """The tool-call style a model writes itself: "compact" for GLM-4.7, "native" for every other GLM-4.x.

    `model` is a catalog alias or family (`tiny`, `air-fp8`, `glm45`, `tiny-4.7`), a hub id or a served
    name; None (a server that did not say) is taken as GLM-4.5, the kit's model. GLM-4.5 and GLM-4.6 write
    a newline after the name and after each tag pair; GLM-4.7 does not. The tiny model is
    GLM-4.5-architecture with GLM-4.5's template: native. A server's: `engine.handle.ServerHandle.own_format`.
    """
    return "compact" if generation_of(model) == "4.7" else "native"


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

"""Replay, the client side: how a request carries a script, and how to tell if a server replays.

The vLLM side lives in `pytest_glm45.replay_processor` (it imports vLLM and torch); this
module does not, so the plugin and the kit's own tests can use it anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_glm45.glm.glm_format import MARKUP_TOKENS, THINK_CLOSE, THINK_OPEN

#: The `vllm_xargs` key that carries a script to the replay processor.
REPLAY_XARG = "glm45_replay"
#: The `vllm_xargs` key naming the markup (space-separated, e.g. "<tool_call> </think>") that the script
#: spells as ordinary text pieces (`<`, `tool`, `_`, `call`, `>`) instead of the single added token. A
#: model can write either; grammars and parsers that match on text see the same thing, parsers that match
#: on token ids do not.
AS_TEXT_XARG = "glm45_replay_as_text"
#: The value of `--logits-processors` that loads replay into a vLLM server.
REPLAY_PROCESSOR = "pytest_glm45.replay_processor:ReplayLogitsProcessor"
#: The longest script accepted, in characters.
MAX_SCRIPT_CHARS = 1_000_000
#: What the probe asks a server to replay; any model's noise would not produce it.
PROBE_SCRIPT = "glm45 replay probe: 7f3a-0c91"


def check_script(script: object) -> str | None:
    """Return why `script` is not a valid replay script, or None if it is."""
    if not isinstance(script, str):
        return f"vllm_xargs.{REPLAY_XARG} must be a string (the text to replay), got {type(script).__name__}"
    if not script:
        return f"vllm_xargs.{REPLAY_XARG} must not be empty"
    if len(script) > MAX_SCRIPT_CHARS:
        return f"vllm_xargs.{REPLAY_XARG} is {len(script)} characters; at most {MAX_SCRIPT_CHARS} are accepted"
    return None


def check_as_text(value: object) -> str | None:
    """Return why `value` is not a valid AS_TEXT_XARG, or None if it is."""
    if not isinstance(value, str):
        return f"vllm_xargs.{AS_TEXT_XARG} must be a string of space-separated markup tags, got {type(value).__name__}"
    unknown = [tag for tag in value.split() if tag not in MARKUP_TOKENS]
    if unknown or not value.split():
        return (f"vllm_xargs.{AS_TEXT_XARG} = {value!r}: {', '.join(map(repr, unknown)) or 'no tag'} is not markup; "
                f"accepted: space-separated tags among {' '.join(MARKUP_TOKENS)}")  # fmt: skip
    return None


def parse_as_text(value: object) -> tuple[str, ...]:
    """The markup tags an AS_TEXT_XARG value names (nothing when absent); ValueError when malformed."""
    if value is None:
        return ()
    problem = check_as_text(value)
    if problem:
        raise ValueError(problem)
    return tuple(dict.fromkeys(str(value).split()))


def as_text_xargs(markup: Sequence[str]) -> dict[str, str]:
    """The `vllm_xargs` entry that spells `markup` as ordinary text pieces (empty for none)."""
    if not markup:
        return {}
    value = " ".join(markup)
    problem = check_as_text(value)
    if problem:
        raise ValueError(problem)
    return {AS_TEXT_XARG: value}


def replayed_script(script: str, opens_think: bool, thinking: bool) -> str:
    """What the model writes for a GLM-4.5 `script` when its template opens the think block itself (GLM-4.7,
    thinking on): the leading `<think>` is already in the prompt, and a script without a think block is an
    empty one (`</think>` first). Otherwise the script itself."""
    if not (opens_think and thinking):
        return script
    return script[len(THINK_OPEN):] if script.startswith(THINK_OPEN) else THINK_CLOSE + script


def replay_extra_body(script: str, extra_body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The `extra_body` of an OpenAI client call that replays `script`."""
    problem = check_script(script)
    if problem:
        raise ValueError(problem)
    body = dict(extra_body or {})
    xargs = dict(body.get("vllm_xargs") or {})
    xargs[REPLAY_XARG] = script
    body["vllm_xargs"] = xargs
    return body


def probe_request(model: str) -> dict[str, Any]:
    """A /v1/completions body that comes back as PROBE_SCRIPT exactly when replay is loaded.

    The completions endpoint runs no reasoning or tool parser, so the text is compared raw.
    """
    return {
        "model": model,
        "prompt": "Say anything.",
        "max_tokens": 64,
        "temperature": 0,
        "vllm_xargs": {REPLAY_XARG: PROBE_SCRIPT},
    }


def probe_says_loaded(response_json: dict[str, Any]) -> bool:
    """Whether a probe's response shows the replay processor at work."""
    try:
        return bool(response_json["choices"][0]["text"] == PROBE_SCRIPT)
    except (KeyError, IndexError, TypeError):
        return False

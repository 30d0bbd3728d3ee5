"""Replay, the client side: how a request carries a script, and how to tell if a server replays.

The vLLM side lives in `pytest_glm45.replay_processor` (it imports vLLM and torch); this
module does not, so the plugin and the kit's own tests can use it anywhere.
"""

from __future__ import annotations

from typing import Any

#: The `vllm_xargs` key that carries a script to the replay processor.
REPLAY_XARG = "glm45_replay"
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

"""Secrets: which values must never reach a log, a report or the terminal, and their removal."""

from __future__ import annotations

import os

#: Environment variables whose values must never reach a log, a report or the terminal.
SECRET_ENV = ("VLLM_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "GLM45_API_KEY", "OPENAI_API_KEY")


def redact(text: str, secrets_: tuple[str, ...]) -> str:
    """Replace every secret in `text` with `***`."""
    for s in secrets_:
        if s:
            text = text.replace(s, "***")
    return text


def known_secrets(extra: tuple[str | None, ...] = ()) -> tuple[str, ...]:
    """The secret values present in this process's environment, plus `extra`."""
    vals = [os.environ.get(k, "") for k in SECRET_ENV] + [e or "" for e in extra]
    return tuple(v for v in vals if len(v) >= 6)

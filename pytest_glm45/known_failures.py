"""Known failures: conformance checks that fail because a given vLLM version is wrong.

One TOML file per vLLM version, `vllm-<version>.toml`, lists the check ids expected to fail
there, each with the reason and the evidence (request, expected, got)::

    [[failure]]
    check = "test_tool_calling::test_replay[native-one-call]"
    configs = ["*", "!*-nostrict"]    # optional: fnmatch patterns on configuration ids; ! excludes
    reason = "the strict grammar rejects GLM-4.5's native newline after the name"
    evidence = { request = "...", expected = "...", got = "HTTP 500 Internal Server Error" }

A known failure does not fail the run; an unexpected failure does; a known failure that
passes is reported (XPASS) so its entry can go. A check id never changes meaning.

The same file pins behaviours where the API leaves a choice and a version's choice must not
change silently (a check compares what it sees with the pin, and asks for one if missing)::

    [pins]
    max_tokens_over_window = "reject"
"""

from __future__ import annotations

import fnmatch
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class KnownFailuresError(ValueError):
    """A known-failures file that does not have the documented shape."""


@dataclass(frozen=True)
class KnownFailure:
    """One entry: which check, where, why, and the evidence."""

    check: str
    reason: str
    evidence: dict[str, Any]
    configs: tuple[str, ...] = ("*",)
    source: str = ""

    def applies_to(self, config_id: str) -> bool:
        """True when some pattern matches and no `!pattern` excludes the configuration."""
        include = [p for p in self.configs if not p.startswith("!")] or ["*"]
        exclude = [p[1:] for p in self.configs if p.startswith("!")]
        return any(fnmatch.fnmatchcase(config_id, p) for p in include) and not any(
            fnmatch.fnmatchcase(config_id, p) for p in exclude
        )


@dataclass
class KnownFailures:
    """All entries for one vLLM version."""

    version: str | None
    entries: list[KnownFailure] = field(default_factory=list)
    path: Path | None = None
    pins: dict[str, Any] = field(default_factory=dict)

    def lookup(self, check: str, config_id: str) -> KnownFailure | None:
        for entry in self.entries:
            if entry.check == check and entry.applies_to(config_id):
                return entry
        return None


def normalize_version(version: str) -> str:
    """`0.32.0+cpu` -> `0.32.0`: the file is per release, whatever the build."""
    return version.split("+", 1)[0].strip()


def default_dir() -> Path:
    """The files shipped with the kit."""
    return Path(str(resources.files("pytest_glm45").joinpath("known_failures")))


def load(version: str | None, directory: Path | None = None) -> KnownFailures:
    """The known failures recorded for `version`; empty if there is no file for it."""
    if not version:
        return KnownFailures(None)
    version = normalize_version(version)
    path = (directory or default_dir()) / f"vllm-{version}.toml"
    if not path.is_file():
        return KnownFailures(version, [], None)
    text = path.read_text("utf-8")
    return KnownFailures(version, parse(text, str(path)), path, dict(tomllib.loads(text).get("pins", {})))


def parse(text: str, source: str = "<string>") -> list[KnownFailure]:
    """Parse one file; raise KnownFailuresError naming the entry and what is missing."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KnownFailuresError(f"{source}: not valid TOML: {exc}") from exc
    out = []
    for n, raw in enumerate(data.get("failure", []), 1):
        missing = [k for k in ("check", "reason", "evidence") if not raw.get(k)]
        if missing:
            raise KnownFailuresError(f"{source}: entry {n} ({raw.get('check', '?')}) lacks {', '.join(missing)}")
        configs = raw.get("configs", ["*"])
        if isinstance(configs, str):
            configs = [configs]
        out.append(
            KnownFailure(
                check=raw["check"],
                reason=raw["reason"],
                evidence=dict(raw["evidence"]),
                configs=tuple(configs),
                source=f"{source}#{n}",
            )
        )
    return out
